//! Login throttling and enumeration resistance (issue 7).

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

async fn attempt(
    server: &TestServer,
    username: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> Response {
    let mut request = server
        .client
        .post(server.url("/v1/login"))
        .json(&json!({ "username": username, "password": password, "delivery": "bearer" }));
    if let Some(ip) = forwarded_for {
        request = request.header("x-forwarded-for", ip);
    }
    request.send().await.unwrap()
}

/// Status, the headers a client could tell apart, and the body.
async fn observable(response: Response) -> (StatusCode, Option<String>, Value) {
    let status = response.status();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, response.json().await.unwrap())
}

#[tokio::test]
async fn twenty_wrong_passwords_lock_at_the_threshold_and_the_right_one_is_refused_too() {
    let server = TestServer::start().await;
    for i in 1..=20 {
        let response = attempt(&server, "alice", "wrong password", None).await;
        if i <= 10 {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
        } else {
            assert_eq!(
                response.status(),
                StatusCode::TOO_MANY_REQUESTS,
                "attempt {i}"
            );
            assert_eq!(response.headers()["retry-after"], "30", "attempt {i}");
            assert_eq!(problem_code(response).await, "rate_limited");
        }
    }
    // The right password gets exactly the same answer while locked: no oracle.
    let locked_wrong = observable(attempt(&server, "alice", "wrong password", None).await).await;
    let locked_right = observable(attempt(&server, "alice", PASSWORD, None).await).await;
    assert_eq!(locked_right, locked_wrong);
    server.advance(29);
    assert_eq!(
        attempt(&server, "alice", PASSWORD, None).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    server.advance(1);
    assert_eq!(
        attempt(&server, "alice", PASSWORD, None).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn lockouts_double_with_each_further_failure() {
    let server = TestServer::start().await;
    for _ in 0..10 {
        attempt(&server, "alice", "wrong password", None).await;
    }
    server.advance(30);
    assert_eq!(
        attempt(&server, "alice", "wrong password", None)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let response = attempt(&server, "alice", PASSWORD, None).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "60");
}

#[tokio::test]
async fn unknown_wrong_disabled_and_locked_answers_are_identical() {
    let server = TestServer::start().await;
    server
        .service
        .create_user(
            &tessera_server::service::Actor::cli(),
            "dora",
            PASSWORD,
            vec![],
            vec![],
        )
        .await
        .unwrap();
    let patch = tessera_server::service::UserPatch {
        disabled: Some(true),
        ..Default::default()
    };
    server
        .service
        .update_user(&tessera_server::service::Actor::cli(), "dora", patch)
        .await
        .unwrap();

    let wrong = observable(attempt(&server, "alice", "wrong password", None).await).await;
    let unknown = observable(attempt(&server, "nobody", "wrong password", None).await).await;
    let disabled = observable(attempt(&server, "dora", PASSWORD, None).await).await;
    assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown, wrong);
    assert_eq!(disabled, wrong);

    for name in ["alice", "nobody", "dora"] {
        for _ in 0..10 {
            attempt(&server, name, "wrong password", None).await;
        }
    }
    let locked_known = observable(attempt(&server, "alice", PASSWORD, None).await).await;
    let locked_unknown = observable(attempt(&server, "nobody", PASSWORD, None).await).await;
    let locked_disabled = observable(attempt(&server, "dora", PASSWORD, None).await).await;
    assert_eq!(locked_known.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(locked_unknown, locked_known);
    assert_eq!(locked_disabled, locked_known);
}

#[tokio::test]
async fn rotating_forwarded_for_from_an_untrusted_peer_does_not_bypass() {
    // Not behind a proxy: X-Forwarded-For is the client's own claim and is ignored.
    let server = TestServer::start().await;
    for i in 0..10 {
        attempt(
            &server,
            "alice",
            "wrong password",
            Some(&format!("198.51.100.{i}")),
        )
        .await;
    }
    let response = attempt(&server, "alice", PASSWORD, Some("203.0.113.99")).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_lock_is_per_client_so_the_user_is_not_locked_out_everywhere() {
    let server = TestServer::start_with(|c| c.behind_proxy = true).await;
    for _ in 0..10 {
        attempt(&server, "alice", "wrong password", Some("198.51.100.7")).await;
    }
    assert_eq!(
        attempt(&server, "alice", PASSWORD, Some("198.51.100.7"))
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the attacker's address is locked"
    );
    let response = attempt(&server, "alice", PASSWORD, Some("203.0.113.5")).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the real user elsewhere still logs in"
    );
}

#[tokio::test]
async fn one_address_spraying_many_accounts_is_refused() {
    let server = TestServer::start_with(|c| c.login_max_failures_per_address = 5).await;
    for i in 0..5 {
        let response = attempt(&server, &format!("user{i}"), "Winter2026!", None).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let response = attempt(&server, "alice", PASSWORD, None).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn the_global_ceiling_holds_across_addresses() {
    let server = TestServer::start_with(|c| {
        c.behind_proxy = true;
        c.login_max_failures_global = 3;
    })
    .await;
    for i in 0..3 {
        attempt(
            &server,
            "alice",
            "wrong password",
            Some(&format!("198.51.100.{i}")),
        )
        .await;
    }
    let response = attempt(&server, "alice", PASSWORD, Some("203.0.113.5")).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    server.advance(60);
    assert_eq!(
        attempt(&server, "alice", PASSWORD, Some("203.0.113.5"))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn long_passwords_are_accepted_whole_and_never_truncated() {
    let server = TestServer::start().await;
    let long: String = "correct-horse-battery-staple-"
        .repeat(4)
        .chars()
        .take(100)
        .collect();
    server
        .service
        .create_user(
            &tessera_server::service::Actor::cli(),
            "longpw",
            &long,
            vec![],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        attempt(&server, "longpw", &long, None).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        attempt(&server, "longpw", &long[..72], None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let too_long = "p".repeat(1025);
    let response = attempt(&server, "longpw", &too_long, None).await;
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "refused before hashing"
    );
}

#[tokio::test]
async fn hashes_are_upgraded_on_login_when_parameters_rise() {
    use std::sync::Arc;
    use tessera_server::clock::SystemClock;
    use tessera_server::service::{Actor, ClientInfo, Delivery, Settings, Tessera};

    let dir = TempDir::new();
    let store = Arc::new(tessera_store_sqlite::SqliteStore::open(&dir.0.join("t.db")).unwrap());
    let master = tessera_core::at_rest::MasterKey::generate().unwrap();
    let service = |memory: u32| {
        let mut config = test_config();
        config.argon2_memory_kib = memory;
        let store = store.clone();
        let master = master.clone();
        async move {
            Tessera::new(
                store,
                Settings::from_config(&config),
                master.clone(),
                Arc::new(SystemClock),
            )
            .await
            .unwrap()
        }
    };
    let weak = service(64).await;
    weak.create_user(&Actor::cli(), "upgrade", PASSWORD, vec![], vec![])
        .await
        .unwrap();
    assert!(
        weak.user("upgrade")
            .await
            .unwrap()
            .password_hash
            .contains("m=64,")
    );

    let strong = service(256).await;
    let wrong = strong
        .login(
            "upgrade",
            "wrong password",
            Delivery::Bearer,
            ClientInfo::default(),
            None,
        )
        .await;
    assert!(wrong.is_err());
    assert!(
        strong
            .user("upgrade")
            .await
            .unwrap()
            .password_hash
            .contains("m=64,"),
        "no upgrade on failure"
    );
    strong
        .login(
            "upgrade",
            PASSWORD,
            Delivery::Bearer,
            ClientInfo::default(),
            None,
        )
        .await
        .unwrap();
    let upgraded = strong.user("upgrade").await.unwrap().password_hash;
    assert!(upgraded.contains("m=256,"), "{upgraded}");
    strong
        .login(
            "upgrade",
            PASSWORD,
            Delivery::Bearer,
            ClientInfo::default(),
            None,
        )
        .await
        .unwrap();
}
