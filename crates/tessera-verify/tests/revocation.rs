//! Revocation through the feed, introspection, and what a verifier does while tessera is
//! away — against a real tessera, through a relay that counts (and can cut) every request
//! the verifier makes to it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../examples/protected.rs"]
#[allow(dead_code)]
mod protected;

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tessera_core::opaque::{self, OpaqueKind};
use tessera_verify::{FeedOptions, IntrospectionOptions, Verifier, WhenStale};

use support::{PASSWORD, login, serve, tessera, tessera_with};

/// Forwards requests to tessera and counts them by path; can refuse paths as if tessera were
/// down.
#[derive(Clone)]
struct Relay {
    upstream: String,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    /// Paths answered 502 while set (every path when it holds "").
    down: Arc<Mutex<Option<String>>>,
    http: reqwest::Client,
}

impl Relay {
    async fn start(upstream: &str) -> (Relay, String) {
        let relay = Relay {
            upstream: upstream.to_owned(),
            counts: Arc::default(),
            down: Arc::default(),
            http: reqwest::Client::new(),
        };
        let router = Router::new().fallback(forward).with_state(relay.clone());
        (relay, serve(router).await)
    }

    /// Requests so far, by path.
    fn counts(&self) -> HashMap<String, usize> {
        self.counts.lock().unwrap().clone()
    }

    /// Requests so far to paths other than the feed's.
    fn besides_feed(&self) -> usize {
        self.counts()
            .iter()
            .filter(|(path, _)| *path != "/v1/revocations")
            .map(|(_, n)| n)
            .sum()
    }

    /// Answers 502 for paths starting with `prefix` ("" for all) until `up`.
    fn cut(&self, prefix: &str) {
        *self.down.lock().unwrap() = Some(prefix.to_owned());
    }

    fn up(&self) {
        *self.down.lock().unwrap() = None;
    }
}

async fn forward(State(relay): State<Relay>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    *relay
        .counts
        .lock()
        .unwrap()
        .entry(path.clone())
        .or_default() += 1;
    let cut = relay.down.lock().unwrap().clone();
    if cut.is_some_and(|prefix| path.starts_with(&prefix)) {
        return StatusCode::BAD_GATEWAY.into_response();
    }
    let target = format!(
        "{}{}",
        relay.upstream,
        request.uri().path_and_query().unwrap().as_str()
    );
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let mut forwarded = relay.http.request(parts.method, target).body(body);
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(value) = parts.headers.get(&name) {
            forwarded = forwarded.header(name, value);
        }
    }
    let answer = forwarded.send().await.unwrap();
    let status = answer.status();
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let bytes = answer.bytes().await.unwrap();
    let mut response = (status, Body::from(bytes)).into_response();
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
}

/// Logs out the session of `token` (a bearer token) on tessera.
async fn logout(tessera: &str, token: &str) {
    let response = reqwest::Client::new()
        .post(format!("{tessera}/v1/logout"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

/// Polls `verifier` until it refuses `token` with `token_revoked`; returns how long that took.
async fn until_refused(verifier: &Verifier, token: &str) -> Duration {
    let started = Instant::now();
    loop {
        match verifier.verify(token).await {
            Err(rejection) if rejection.code() == "token_revoked" => return started.elapsed(),
            Err(rejection) => panic!("refused, but not as revoked: {rejection}"),
            Ok(_) => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a logged-out token was still accepted after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The 99th percentile of `samples` (nearest rank).
fn p99(samples: &mut [Duration]) -> Duration {
    samples.sort();
    let rank = (samples.len() * 99).div_ceil(100).max(1);
    samples[rank - 1]
}

/// The measure of the issue: a logout on tessera reaches the example service, which made no
/// request to tessera per call, within 100 ms at the 99th percentile.
#[tokio::test]
async fn a_logout_reaches_the_service_within_100_ms_with_no_request_to_tessera_per_call() {
    let (tessera, _dir, _stop) = tessera().await;
    let (relay, via_relay) = Relay::start(&tessera).await;
    let verifier = Verifier::builder(&via_relay).build().await.unwrap();
    let service = serve(protected::app(verifier.clone())).await;
    let http = reqwest::Client::new();

    let mut latencies = Vec::new();
    let mut calls = 0;
    for _ in 0..40 {
        let token = login(&tessera, "alice").await;
        let before = relay.besides_feed();
        for _ in 0..10 {
            let me = http
                .get(format!("{service}/me"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(me.status(), 200);
            calls += 1;
        }
        assert_eq!(
            relay.besides_feed(),
            before,
            "the service asked tessera while verifying: {:?}",
            relay.counts()
        );
        logout(&tessera, &token).await;
        latencies.push(until_refused(&verifier, &token).await);
        // Over HTTP too, with the server's code.
        let me = http
            .get(format!("{service}/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(me.status(), 401);
        let body: Value = me.json().await.unwrap();
        assert_eq!(body["code"], "token_revoked");
    }
    let p99 = p99(&mut latencies);
    println!(
        "feed: {} logouts, p99 {p99:?}, max {:?}; {calls} verified calls; requests to tessera: {:?}",
        latencies.len(),
        latencies.last().unwrap(),
        relay.counts()
    );
    assert!(p99 <= Duration::from_millis(100), "p99 {p99:?}");
    // The feed is long-polled: about one request per revocation, not one per call.
    let feed = relay.counts()["/v1/revocations"];
    assert!(feed <= 2 * latencies.len() + 5, "{feed} feed requests");
}

/// Every way a session ends reaches the verifier: the user's other sessions, a password
/// change, an administrator's role change and a deleted user.
#[tokio::test]
async fn user_wide_revocations_reach_the_verifier() {
    let (tessera, _dir, _stop) = tessera().await;
    let verifier = Verifier::builder(&tessera).build().await.unwrap();
    let http = reqwest::Client::new();

    // "Sign out everywhere else": the other session ends, the current one stays.
    let kept = login(&tessera, "alice").await;
    let other = login(&tessera, "alice").await;
    let response = http
        .delete(format!("{tessera}/v1/sessions?scope=others"))
        .bearer_auth(&kept)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    until_refused(&verifier, &other).await;
    verifier.verify(&kept).await.unwrap();

    // An administrator changes alice's roles: all her sessions end.
    let admin = login(&tessera, "root").await;
    let response = http
        .patch(format!("{tessera}/v1/admin/users/alice"))
        .bearer_auth(&admin)
        .json(&json!({ "roles": ["viewer"] }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    until_refused(&verifier, &kept).await;

    // A deleted user's tokens die with them.
    let again = login(&tessera, "alice").await;
    verifier.verify(&again).await.unwrap();
    let response = http
        .delete(format!("{tessera}/v1/admin/users/alice"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    until_refused(&verifier, &again).await;
    // The administrator's own session was never listed.
    verifier.verify(&admin).await.unwrap();
}

/// tessera down: the service keeps verifying with what it holds for `max_staleness`, then
/// refuses with 503 until the feed answers again.
#[tokio::test]
async fn with_tessera_away_tokens_verify_until_max_staleness_then_fail_closed() {
    let (tessera, _dir, _stop) = tessera().await;
    let (relay, via_relay) = Relay::start(&tessera).await;
    let feed = FeedOptions {
        max_staleness: Duration::from_secs(2),
        wait: Duration::from_secs(1),
        ..FeedOptions::default()
    };
    let verifier = Verifier::builder(&via_relay)
        .revocation_feed(feed)
        .build()
        .await
        .unwrap();
    let token = login(&tessera, "alice").await;
    verifier.verify(&token).await.unwrap();

    relay.cut("");
    let cut_at = Instant::now();
    // Within the staleness bound: still verified, from the keys and revocations held.
    tokio::time::sleep(Duration::from_millis(500)).await;
    verifier.verify(&token).await.unwrap();
    // Past it: 503 not_ready, for every token.
    let refused_after = loop {
        match verifier.verify(&token).await {
            Ok(_) => {}
            Err(rejection) => {
                assert_eq!(rejection.code(), "not_ready", "{rejection}");
                assert_eq!(rejection.status(), StatusCode::SERVICE_UNAVAILABLE);
                break cut_at.elapsed();
            }
        }
        assert!(
            cut_at.elapsed() < Duration::from_secs(10),
            "never failed closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        refused_after >= Duration::from_secs(1),
        "failed closed after only {refused_after:?}"
    );
    // A logout while the service could not hear of it...
    logout(&tessera, &token).await;
    // ...is refused as revoked once the feed is back, never accepted in between.
    relay.up();
    let healed = Instant::now();
    loop {
        match verifier.verify(&token).await {
            Err(rejection) if rejection.code() == "token_revoked" => break,
            Err(rejection) => assert_eq!(rejection.code(), "not_ready", "{rejection}"),
            Ok(_) => panic!("a token revoked during the outage was accepted"),
        }
        assert!(
            healed.elapsed() < Duration::from_secs(10),
            "never recovered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fresh = login(&tessera, "alice").await;
    verifier.verify(&fresh).await.unwrap();
}

/// The opaque cookie token of a login (`tsr_…`).
async fn opaque_login(tessera: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{tessera}/v1/login"))
        .json(&json!({ "username": "alice", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    let token = cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned();
    assert!(token.starts_with("tsr_"), "{token}");
    token
}

/// A fresh introspection secret and the digest tessera is configured with, made as
/// `tessera generate introspection-secret` makes them.
fn introspection_secret() -> (String, String) {
    let secret = opaque::generate(OpaqueKind::Introspection).unwrap();
    (secret.token, secret.hash.to_hex())
}

/// Opaque tokens are checked by asking tessera with the service's secret; a wrong secret is
/// an operator's error (503), never a refused user.
#[tokio::test]
async fn opaque_tokens_are_introspected_with_the_service_secret() {
    let (secret, digest) = introspection_secret();
    let (tessera, _dir, _stop) =
        tessera_with(|config| config.introspection_secret_digests = vec![digest]).await;
    let (relay, via_relay) = Relay::start(&tessera).await;
    let verifier = Verifier::builder(&via_relay)
        .introspection(&secret, IntrospectionOptions::default())
        .build()
        .await
        .unwrap();
    let token = opaque_login(&tessera).await;
    let session = verifier.verify(&token).await.unwrap();
    assert_eq!(session.name(), "alice");
    assert_eq!(session.roles(), ["editor"]);
    // Cached: a second check does not ask again.
    let asked = relay.counts()["/v1/introspect"];
    verifier.verify(&token).await.unwrap();
    assert_eq!(relay.counts()["/v1/introspect"], asked);
    // A made-up opaque token is refused.
    let made_up = format!("tsr_{}", "A".repeat(43));
    assert_eq!(
        verifier.verify(&made_up).await.unwrap_err().code(),
        "invalid_token"
    );
    // The cached answer does not outlive a revocation the feed reports.
    let response = reqwest::Client::new()
        .post(format!("{tessera}/v1/logout"))
        .header(header::COOKIE, format!("__Host-tessera={token}"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    until_refused(&verifier, &token).await;

    // Another service's secret is not this tessera's.
    let (wrong, _) = introspection_secret();
    let stranger = Verifier::builder(&tessera)
        .introspection(wrong, IntrospectionOptions::default())
        .build()
        .await
        .unwrap();
    let token = opaque_login(&tessera).await;
    let refused = stranger.verify(&token).await.unwrap_err();
    assert_eq!(refused.code(), "not_ready", "{refused}");
}

/// With `WhenStale::Introspect`, a service cut off from the feed asks tessera about each
/// token instead of refusing them all: a token revoked meanwhile is refused, others pass.
#[tokio::test]
async fn a_stale_feed_can_fall_back_to_introspection() {
    let (secret, digest) = introspection_secret();
    let (tessera, _dir, _stop) =
        tessera_with(|config| config.introspection_secret_digests = vec![digest]).await;
    let (relay, via_relay) = Relay::start(&tessera).await;
    let verifier = Verifier::builder(&via_relay)
        .introspection(
            &secret,
            IntrospectionOptions {
                cache_for: Duration::ZERO,
                ..IntrospectionOptions::default()
            },
        )
        .revocation_feed(FeedOptions {
            max_staleness: Duration::from_secs(2),
            wait: Duration::from_secs(1),
            when_stale: WhenStale::Introspect,
            ..FeedOptions::default()
        })
        .build()
        .await
        .unwrap();
    let kept = login(&tessera, "alice").await;
    let ended = login(&tessera, "alice").await;
    relay.cut("/v1/revocations");
    tokio::time::sleep(Duration::from_secs(4)).await;
    logout(&tessera, &ended).await;
    // The feed cannot say so, introspection does.
    let refused = verifier.verify(&ended).await.unwrap_err();
    assert_eq!(refused.code(), "invalid_token", "{refused}");
    verifier.verify(&kept).await.unwrap();
    assert!(relay.counts()["/v1/introspect"] >= 2);
    // A verifier configured to fall back without a way to do it is refused at build.
    let error = Verifier::builder(&tessera)
        .revocation_feed(FeedOptions {
            when_stale: WhenStale::Introspect,
            ..FeedOptions::default()
        })
        .build()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("introspection"), "{error}");
}
