//! The verified-token cache must never delay a revocation or extend a token's life: every case
//! first gets the JWT cached (accepted twice), then changes the session behind it.

use reqwest::{Method, StatusCode};
use tessera_core::ids::SessionId;
use tessera_store::prelude::*;
use tessera_store_sqlite::SqliteStore;

use crate::support::{ClientSession, Delivery, T0, TestServer, problem_code};

async fn verify(server: &TestServer, session: &ClientSession) -> (StatusCode, Option<String>) {
    let response = server.send(Method::GET, "/v1/verify", session).await;
    let status = response.status();
    if status == StatusCode::OK {
        (status, None)
    } else {
        (status, Some(problem_code(response).await))
    }
}

/// A bearer session whose JWT has been accepted twice; returns it with how many of those two
/// checks the verified-token cache answered.
async fn accepted_twice(server: &TestServer) -> (ClientSession, u64) {
    let session = server.session("alice", Delivery::Bearer).await;
    let hits = server.service.verified_token_hits();
    for _ in 0..2 {
        assert_eq!(verify(server, &session).await.0, StatusCode::OK);
    }
    (session, server.service.verified_token_hits() - hits)
}

/// A bearer session whose JWT is in the cache: its second check was answered from it.
async fn cached_session(server: &TestServer) -> ClientSession {
    let (session, hits) = accepted_twice(server).await;
    assert_eq!(hits, 1, "the second check came from the cache");
    session
}

#[tokio::test]
async fn revocation_by_another_instance_is_instant_for_a_cached_jwt() {
    let server = TestServer::start().await;
    let session = cached_session(&server).await;
    // Another process on the same database (a second instance, or the CLI) revokes it.
    let other = SqliteStore::open(&server.db_path()).unwrap();
    assert!(
        other
            .revoke_session(&SessionId::from(session.session_id.as_str()), T0)
            .await
            .unwrap()
    );
    assert_eq!(
        verify(&server, &session).await,
        (StatusCode::UNAUTHORIZED, Some("token_revoked".into()))
    );
    // And it stays refused: the entry was dropped, not re-admitted.
    assert_eq!(verify(&server, &session).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logout_and_user_changes_elsewhere_end_a_cached_jwt_at_once() {
    let server = TestServer::start().await;
    let session = cached_session(&server).await;
    let logout = server.send(Method::POST, "/v1/logout", &session).await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert_eq!(verify(&server, &session).await.0, StatusCode::UNAUTHORIZED);

    // A user disabled or deleted through another instance.
    let other = SqliteStore::open(&server.db_path()).unwrap();
    let session = cached_session(&server).await;
    let mut alice = other.user_by_name("alice").await.unwrap().unwrap();
    alice.disabled = true;
    other.update_user(&alice).await.unwrap();
    assert_eq!(
        verify(&server, &session).await,
        (StatusCode::UNAUTHORIZED, Some("token_revoked".into()))
    );
    alice.disabled = false;
    other.update_user(&alice).await.unwrap();
    let session = cached_session(&server).await;
    other.delete_user(&alice.id).await.unwrap();
    assert_eq!(
        verify(&server, &session).await,
        (StatusCode::UNAUTHORIZED, Some("token_revoked".into()))
    );
}

#[tokio::test]
async fn a_cached_jwt_expires_at_exp_plus_leeway_and_its_session_idles_out() {
    let server = TestServer::start().await;
    let session = cached_session(&server).await;
    server.advance(600 + 29);
    assert_eq!(verify(&server, &session).await.0, StatusCode::OK);
    server.advance(1);
    assert_eq!(
        verify(&server, &session).await,
        (StatusCode::UNAUTHORIZED, Some("token_expired".into()))
    );

    // A JWT of a session that has idled out is refused while the JWT itself is still valid.
    let server = TestServer::start_with(|c| {
        c.idle_timeout = std::time::Duration::from_secs(60);
        c.activity_write_interval = std::time::Duration::from_secs(1000);
    })
    .await;
    let session = cached_session(&server).await;
    server.advance(61);
    assert_eq!(
        verify(&server, &session).await,
        (StatusCode::UNAUTHORIZED, Some("token_expired".into()))
    );
}

#[tokio::test]
async fn a_token_differing_from_a_cached_one_is_verified_in_full() {
    let server = TestServer::start().await;
    let mut session = cached_session(&server).await;
    // Change one character inside the signature (all six bits of a middle character count, so
    // the encoding stays canonical): no longer the cached string, and no longer valid.
    let at = session.access.rfind('.').unwrap() + 10;
    let old = session.access.as_bytes()[at];
    let new = if old == b'A' { "B" } else { "A" };
    session.access.replace_range(at..=at, new);
    let hits = server.service.verified_token_hits();
    assert_eq!(
        verify(&server, &session).await,
        (StatusCode::UNAUTHORIZED, Some("invalid_token".into()))
    );
    assert_eq!(
        server.service.verified_token_hits(),
        hits,
        "not a cache hit"
    );
}

#[tokio::test]
async fn with_the_cache_off_tokens_verify_and_revoke_the_same() {
    let server = TestServer::start_with(|c| c.jwt_cache_capacity = 0).await;
    let (session, hits) = accepted_twice(&server).await;
    assert_eq!(hits, 0, "off means every check verifies the signature");
    let other = SqliteStore::open(&server.db_path()).unwrap();
    other
        .revoke_session(&SessionId::from(session.session_id.as_str()), T0)
        .await
        .unwrap();
    assert_eq!(
        verify(&server, &session).await,
        (StatusCode::UNAUTHORIZED, Some("token_revoked".into()))
    );
}

/// The SQLite store's session-record cache serves `/v1/verify` for an opaque cookie seen
/// before; a change made by another process on the same database (here a second store, as
/// the CLI or a second server would be) must show in the very next answer.
#[tokio::test]
async fn a_cached_opaque_session_follows_changes_made_elsewhere_at_once() {
    let server = TestServer::start().await;
    let other = SqliteStore::open(&server.db_path()).unwrap();
    let roles = |response: &reqwest::Response| {
        response.headers()["x-tessera-roles"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let session = server.session("alice", Delivery::Cookie).await;
    for _ in 0..3 {
        let response = server.send(Method::GET, "/v1/verify", &session).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(roles(&response), "editor");
    }

    // A role change elsewhere is in the next answer's headers.
    let mut alice = other.user_by_name("alice").await.unwrap().unwrap();
    alice.roles = vec!["viewer".to_owned()];
    other.update_user(&alice).await.unwrap();
    let response = server.send(Method::GET, "/v1/verify", &session).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(roles(&response), "viewer");

    // A revocation elsewhere refuses the next request, and every one after it.
    assert!(
        other
            .revoke_session(&SessionId::from(session.session_id.as_str()), T0)
            .await
            .unwrap()
    );
    for _ in 0..2 {
        assert_eq!(
            verify(&server, &session).await,
            (StatusCode::UNAUTHORIZED, Some("token_revoked".into()))
        );
    }
}
