//! tessera-verify against a real tessera, the shared refused-token corpus, and a JWKS server
//! the tests control (refresh, unknown `kid`, outage), with a manual clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../examples/protected.rs"]
#[allow(dead_code)]
mod protected;

#[path = "../../tessera-token/tests/vectors/corpus.rs"]
mod corpus;

#[path = "../../tessera-token/tests/support/mod.rs"]
mod keys;

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};
use tessera_verify::tessera_token::Algorithm;
use tessera_verify::{JwksOptions, RejectionKind, Verifier};

use support::{ManualClock, call, get_with, login, serve, tessera};

#[tokio::test]
async fn the_example_service_accepts_tessera_tokens_and_refuses_the_rest() {
    let (tessera, _dir, _stop) = tessera().await;
    let verifier = Verifier::builder(&tessera).build().await.unwrap();
    let app = protected::app(verifier);
    let service = serve(app.clone()).await;
    let http = reqwest::Client::new();

    let alice = login(&tessera, "alice").await;
    let root = login(&tessera, "root").await;

    // A genuine token is accepted, over a real socket.
    let me = http
        .get(format!("{service}/me"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    assert!(me.text().await.unwrap().ends_with(" alice"));
    let (status, body, _) = call(&app, get_with("/reports", Some(&alice), None)).await;
    assert_eq!((status, body), (StatusCode::OK, json!("reports for alice")));
    // The same token as the host-only cookie.
    let cookie = format!("__Host-tessera={alice}");
    let (status, _, _) = call(&app, get_with("/me", None, Some(&cookie))).await;
    assert_eq!(status, StatusCode::OK);

    // A tampered token: one character of the payload changed.
    let mut parts: Vec<String> = alice.split('.').map(str::to_owned).collect();
    let flipped = if parts[1].ends_with('A') { 'B' } else { 'A' };
    parts[1].pop();
    parts[1].push(flipped);
    let tampered = parts.join(".");
    let (status, body, response) = call(&app, get_with("/me", Some(&tampered), None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "invalid_token");
    assert_eq!(body["type"], "urn:tessera:problem:invalid_token");
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    assert_eq!(
        response.headers()[header::WWW_AUTHENTICATE],
        "Bearer error=\"invalid_token\""
    );
    // As a cookie, the refusal carries no bearer challenge (as the server's).
    let cookie = format!("__Host-tessera={tampered}");
    let (status, _, response) = call(&app, get_with("/me", None, Some(&cookie))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());

    // A missing role: 403 from the layer; a missing permission: 403 from the handler.
    let (status, body, _) = call(&app, get_with("/admin", Some(&alice), None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "forbidden");
    let (status, body, _) = call(&app, get_with("/reports", Some(&root), None)).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::FORBIDDEN, &json!("forbidden"))
    );
    let (status, body, _) = call(&app, get_with("/admin", Some(&root), None)).await;
    assert_eq!((status, body), (StatusCode::OK, json!("admin area, root")));

    // No token: 401 unauthenticated with the bare challenge; optional routes still answer.
    let (status, body, response) = call(&app, get_with("/me", None, None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "unauthenticated");
    assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    let (status, body, _) = call(&app, get_with("/admin", None, None)).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::UNAUTHORIZED, &json!("unauthenticated"))
    );
    let (_, body, _) = call(&app, get_with("/hello", None, None)).await;
    assert_eq!(body, json!("hello, stranger"));
    let (_, body, _) = call(&app, get_with("/hello", Some(&alice), None)).await;
    assert_eq!(body, json!("hello, alice"));
    let (status, _, _) = call(&app, get_with("/hello", Some(&tampered), None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The refusals match the server's own, member for member, challenge included.
    for (token, path) in [(Some(tampered.as_str()), "/me"), (None, "/me")] {
        let mut request = http.get(format!("{tessera}/v1/session"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let from_server = request.send().await.unwrap();
        let server_challenge = from_server.headers()[header::WWW_AUTHENTICATE].clone();
        let server_body: Value = from_server.json().await.unwrap();
        let (_, body, response) = call(&app, get_with(path, token, None)).await;
        for member in ["type", "title", "status", "code", "detail"] {
            assert_eq!(body[member], server_body[member], "{member}");
        }
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            server_challenge
        );
    }

    // An opaque token needs the server: a clear 401.
    let (status, body, _) = call(&app, get_with("/me", None, Some("__Host-tessera=tsr_abc"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "invalid_token");
    assert!(
        body["detail"].as_str().unwrap().contains("introspection"),
        "{body}"
    );
}

// ---------------------------------------------------------------------------------------------
// Every token of tessera-token's shared refused corpus is refused through the layer too.

#[tokio::test]
async fn every_corpus_token_is_refused_through_the_layer() {
    let cases = corpus::cases();
    let mut failures = Vec::new();
    let mut sent_over_http = 0;
    for algorithm in [Algorithm::EdDsa, Algorithm::Es256, Algorithm::Hs256] {
        let key = keys::TestKey::new(algorithm, 0x21);
        let others: Vec<keys::TestKey> = [Algorithm::EdDsa, Algorithm::Es256, Algorithm::Hs256]
            .into_iter()
            .filter(|a| *a != algorithm)
            .map(|a| keys::TestKey::new(a, 0x31))
            .collect();
        let verifier = Verifier::builder("http://unused.invalid")
            .issuer(keys::ISSUER)
            .audience(keys::AUDIENCE)
            .clock(ManualClock::at(keys::NOW))
            .build_with_keys(keys::key_set(&[&key, &others[0], &others[1]]));
        let app = Router::new()
            .route("/", get(|| async { "through" }))
            .layer(verifier.layer());
        let sign = |input: &[u8]| key.signature(input);
        let genuine = corpus::Genuine {
            header: key.header(),
            claims: keys::claims(),
            now: keys::NOW,
            sign: &sign,
        };
        // The control: the genuine token goes through.
        let control = genuine.token(&serde_json::Map::new());
        let (status, _, _) = call(&app, get_with("/", Some(&control), None)).await;
        assert_eq!(status, StatusCode::OK, "{algorithm}");
        for case in cases.iter().filter(|case| genuine.applies(case)) {
            let name = case["name"].as_str().unwrap();
            let token = genuine.token(case);
            // Directly, with the code the corpus expects.
            match verifier.verify(&token).await {
                Ok(_) => failures.push(format!("{algorithm}: {name}: accepted")),
                Err(rejection) if rejection.code() != case["code"] => failures.push(format!(
                    "{algorithm}: {name}: {}, expected {}",
                    rejection.code(),
                    case["code"]
                )),
                Err(_) => {}
            }
            // Through the layer, for every token a header can carry at all.
            if HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
                continue;
            }
            sent_over_http += 1;
            let (status, body, _) = call(&app, get_with("/", Some(&token), None)).await;
            if status != StatusCode::UNAUTHORIZED || body["code"] != case["code"] {
                failures.push(format!(
                    "{algorithm}: {name}: layer answered {status} {body}"
                ));
            }
        }
    }
    assert!(sent_over_http > 300, "{sent_over_http}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The JWKS client against a JWKS server the tests control.

/// What the test JWKS server answers, and how often it was asked.
struct JwksState {
    body: String,
    status: StatusCode,
    cache_control: &'static str,
    hits: usize,
}

#[derive(Clone)]
struct JwksServer(Arc<Mutex<JwksState>>);

impl JwksServer {
    async fn start(keys: &[&keys::TestKey], cache_control: &'static str) -> (JwksServer, String) {
        let server = JwksServer(Arc::new(Mutex::new(JwksState {
            body: keys::jwks(keys),
            status: StatusCode::OK,
            cache_control,
            hits: 0,
        })));
        let state = server.clone();
        let router = Router::new().route(
            "/.well-known/jwks.json",
            get(move || {
                let state = state.clone();
                async move {
                    let mut s = state.0.lock().unwrap();
                    s.hits += 1;
                    (
                        s.status,
                        [(header::CACHE_CONTROL, s.cache_control)],
                        s.body.clone(),
                    )
                        .into_response()
                }
            }),
        );
        let base = serve(router).await;
        (server, base)
    }
    fn hits(&self) -> usize {
        self.0.lock().unwrap().hits
    }
    fn publish(&self, keys: &[&keys::TestKey]) {
        self.0.lock().unwrap().body = keys::jwks(keys);
    }
    fn fail(&self, failing: bool) {
        self.0.lock().unwrap().status = if failing {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        };
    }
}

/// A token of `key`, valid from `now` for a day.
fn token_of(key: &keys::TestKey, now: i64) -> String {
    let mut claims = keys::claims();
    claims["iat"] = json!(now);
    claims["nbf"] = json!(now);
    claims["exp"] = json!(now + 86_400);
    key.sign(&claims)
}

const T0: i64 = 1_800_000_000;

async fn verifier_for(base: &str, clock: Arc<ManualClock>, options: JwksOptions) -> Verifier {
    // A JWKS server alone: these tests are about keys, not revocations.
    Verifier::builder(base)
        .without_revocation_feed()
        .issuer(keys::ISSUER)
        .audience(keys::AUDIENCE)
        .clock(clock)
        .jwks_options(options)
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn keys_are_refreshed_when_max_age_runs_out_within_the_bounds() {
    let a = keys::TestKey::new(Algorithm::EdDsa, 1);
    let (jwks, base) = JwksServer::start(&[&a], "public, max-age=60").await;
    let clock = ManualClock::at(T0);
    let verifier = verifier_for(&base, clock.clone(), JwksOptions::default()).await;
    assert_eq!(jwks.hits(), 1, "fetched at start");
    let token = token_of(&a, T0);
    clock.advance(59);
    verifier.verify(&token).await.unwrap();
    assert_eq!(jwks.hits(), 1, "max-age=60 has not run out");
    clock.advance(1);
    verifier.verify(&token).await.unwrap();
    assert_eq!(jwks.hits(), 2, "refreshed at max-age");

    // A max-age below the minimum waits for the minimum.
    let (jwks, base) = JwksServer::start(&[&a], "max-age=1").await;
    let clock = ManualClock::at(T0);
    let options = JwksOptions {
        min_refresh: Duration::from_secs(30),
        ..JwksOptions::default()
    };
    let verifier = verifier_for(&base, clock.clone(), options).await;
    clock.advance(29);
    verifier.verify(&token).await.unwrap();
    assert_eq!(jwks.hits(), 1);
    clock.advance(1);
    verifier.verify(&token).await.unwrap();
    assert_eq!(jwks.hits(), 2);
}

#[tokio::test]
async fn an_unknown_kid_fetches_again_at_most_once_a_second() {
    let a = keys::TestKey::new(Algorithm::EdDsa, 1);
    let b = keys::TestKey::new(Algorithm::EdDsa, 2);
    let c = keys::TestKey::new(Algorithm::Es256, 3);
    let (jwks, base) = JwksServer::start(&[&a], "max-age=3600").await;
    let clock = ManualClock::at(T0);
    let verifier = verifier_for(&base, clock.clone(), JwksOptions::default()).await;

    // The issuer rotates to b: the first b token makes the client look again.
    jwks.publish(&[&a, &b]);
    clock.advance(1);
    verifier.verify(&token_of(&b, T0)).await.unwrap();
    assert_eq!(jwks.hits(), 2);

    // Within the same second, another unknown kid does not fetch again.
    jwks.publish(&[&a, &b, &c]);
    let refused = verifier.verify(&token_of(&c, T0)).await.unwrap_err();
    assert_eq!(refused.code(), "invalid_token");
    for _ in 0..10 {
        let _ = verifier.verify(&token_of(&c, T0)).await;
    }
    assert_eq!(
        jwks.hits(),
        2,
        "made-up kids cannot make the client hammer the issuer"
    );
    // A second later it does.
    clock.advance(1);
    verifier.verify(&token_of(&c, T0)).await.unwrap();
    assert_eq!(jwks.hits(), 3);
}

#[tokio::test]
async fn last_good_keys_outlive_an_outage_for_max_stale_then_fail_closed() {
    let a = keys::TestKey::new(Algorithm::EdDsa, 1);
    let (jwks, base) = JwksServer::start(&[&a], "max-age=60").await;
    let clock = ManualClock::at(T0);
    let options = JwksOptions {
        min_refresh: Duration::from_secs(30),
        max_stale: Duration::from_secs(600),
        ..JwksOptions::default()
    };
    let verifier = verifier_for(&base, clock.clone(), options).await;
    let token = token_of(&a, T0);
    let app = Router::new()
        .route("/", get(|| async { "through" }))
        .layer(verifier.layer());

    jwks.fail(true);
    clock.advance(60);
    verifier.verify(&token).await.unwrap();
    assert_eq!(jwks.hits(), 2, "the refresh was tried, and failed");
    // Failed refreshes are retried after min_refresh, not on every request.
    verifier.verify(&token).await.unwrap();
    assert_eq!(jwks.hits(), 2);
    clock.advance(30);
    verifier.verify(&token).await.unwrap();
    assert_eq!(jwks.hits(), 3);

    // Up to max_stale after the last good fetch, the held keys still verify.
    clock.advance(600 - 90);
    verifier.verify(&token).await.unwrap();
    // Past it: 503, fail closed.
    clock.advance(1);
    let refused = verifier.verify(&token).await.unwrap_err();
    assert_eq!(refused.kind(), &RejectionKind::KeysUnavailable);
    let (status, body, response) = call(&app, get_with("/", Some(&token), None)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["code"], "not_ready");
    assert!(response.headers().contains_key(header::RETRY_AFTER));

    // The issuer is back: the next retry restores service.
    jwks.fail(false);
    clock.advance(30);
    verifier.verify(&token).await.unwrap();
    let (status, _, _) = call(&app, get_with("/", Some(&token), None)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_verifier_does_not_start_without_keys() {
    let a = keys::TestKey::new(Algorithm::EdDsa, 1);
    let (jwks, base) = JwksServer::start(&[&a], "max-age=60").await;
    jwks.fail(true);
    let error = Verifier::builder(&base).build().await.unwrap_err();
    assert!(error.to_string().contains("status 500"), "{error}");
}

#[tokio::test]
async fn a_cached_token_has_its_claims_checked_again_and_dies_with_its_key() {
    let a = keys::TestKey::new(Algorithm::EdDsa, 1);
    let b = keys::TestKey::new(Algorithm::EdDsa, 2);
    // Fixed keys: a seen token is still refused once it expires.
    let clock = ManualClock::at(keys::NOW);
    let verifier = Verifier::builder("http://unused.invalid")
        .issuer(keys::ISSUER)
        .audience(keys::AUDIENCE)
        .clock(clock.clone())
        .build_with_keys(keys::key_set(&[&a]));
    let token = a.sign(&keys::claims());
    verifier.verify(&token).await.unwrap();
    verifier.verify(&token).await.unwrap();
    clock.advance(600 + 30);
    let refused = verifier.verify(&token).await.unwrap_err();
    assert_eq!(refused.code(), "token_expired");

    // JWKS: a token seen under a key the issuer then withdraws is refused after the refresh.
    let (jwks, base) = JwksServer::start(&[&a], "max-age=60").await;
    let clock = ManualClock::at(T0);
    let verifier = verifier_for(&base, clock.clone(), JwksOptions::default()).await;
    let token = token_of(&a, T0);
    verifier.verify(&token).await.unwrap();
    jwks.publish(&[&b]);
    clock.advance(60);
    let refused = verifier.verify(&token).await.unwrap_err();
    assert_eq!(
        refused.kind(),
        &RejectionKind::Token(tessera_verify::tessera_token::TokenError::UnknownKey)
    );
    assert_eq!(jwks.hits(), 2);
}

/// An opaque-token check that knows one token.
struct KnowsOne;

impl tessera_verify::OpaqueTokenCheck for KnowsOne {
    fn check<'a>(
        &'a self,
        token: &'a str,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<tessera_verify::Session, tessera_verify::Rejection>,
                > + Send
                + 'a,
        >,
    > {
        Box::pin(async move {
            if token == "tsr_known" {
                let claims: tessera_verify::tessera_token::AccessClaims =
                    tessera_verify::tessera_token::claims::decode(
                        keys::claims().to_string().as_bytes(),
                    )
                    .unwrap();
                Ok(tessera_verify::Session::from_verified_claims(claims))
            } else {
                Err(RejectionKind::Token(tessera_verify::tessera_token::TokenError::Unknown).into())
            }
        })
    }
}

#[tokio::test]
async fn opaque_tokens_go_to_the_configured_check() {
    let a = keys::TestKey::new(Algorithm::EdDsa, 1);
    let verifier = Verifier::builder("http://unused.invalid")
        .opaque_tokens(KnowsOne)
        .build_with_keys(keys::key_set(&[&a]));
    let session = verifier.verify("tsr_known").await.unwrap();
    assert_eq!(session.name(), "alice");
    assert_eq!(
        verifier.verify("tsr_other").await.unwrap_err().code(),
        "invalid_token"
    );
}

/// Issue 16: the layer's step-up guards answer as tessera's `/v1/verify` does: 401
/// `step_up_required` with RFC 9470's challenge, from the token's `amr` and `auth_time`.
#[tokio::test]
async fn the_layer_asks_for_a_second_factor_or_a_recent_sign_in() {
    let key = keys::TestKey::new(Algorithm::EdDsa, 0x41);
    let clock = ManualClock::at(keys::NOW);
    let verifier = Verifier::builder("http://tessera.invalid")
        .issuer(keys::ISSUER)
        .audience(keys::AUDIENCE)
        .clock(clock.clone())
        .build_with_keys(keys::key_set(&[&key]));
    let app = Router::new()
        .route("/admin", get(|| async { "admin" }))
        .layer(verifier.layer().require_second_factor())
        .merge(
            Router::new()
                .route("/billing", get(|| async { "billing" }))
                .layer(
                    verifier
                        .layer()
                        .require_recent_sign_in(Duration::from_secs(300)),
                ),
        );
    let token = |amr: Value, auth_time: Option<i64>| {
        let mut claims = keys::claims();
        claims["amr"] = amr;
        if let Some(auth_time) = auth_time {
            claims["auth_time"] = json!(auth_time);
        }
        key.sign(&claims)
    };
    let password = token(json!(["pwd"]), Some(keys::NOW));
    let both = token(json!(["pwd", "otp"]), Some(keys::NOW));
    let unknown = token(json!([]), None);

    let (status, body, response) = call(&app, get_with("/admin", Some(&password), None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "step_up_required");
    assert_eq!(body["aal"], 2);
    let challenge = response.headers()[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap();
    assert!(
        challenge.contains("insufficient_user_authentication"),
        "{challenge}"
    );
    assert!(challenge.contains("acr_values=\"aal2\""), "{challenge}");
    // As a cookie: the same refusal, without the bearer challenge (as the server's).
    let cookie = format!("__Host-tessera={password}");
    let (status, body, response) = call(&app, get_with("/admin", None, Some(&cookie))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("step_up_required"))
    );
    assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
    let (status, _, _) = call(&app, get_with("/admin", Some(&both), None)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(&app, get_with("/admin", Some(&unknown), None)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "no recorded methods: no second factor"
    );

    let (status, _, _) = call(&app, get_with("/billing", Some(&password), None)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(&app, get_with("/billing", Some(&unknown), None)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "no recorded sign-in time: not recent"
    );
    clock.advance(301);
    let (status, body, _) = call(&app, get_with("/billing", Some(&both), None)).await;
    assert_eq!(
        (status, body["max_age"].as_i64()),
        (StatusCode::UNAUTHORIZED, Some(300))
    );
    // The extractor's own check, for handlers that decide per request.
    let session = verifier.verify(&both).await.unwrap();
    assert_eq!(session.methods().names(), ["pwd", "otp"]);
    assert_eq!(session.auth_time(), Some(keys::NOW));
    let recent = tessera_verify::tessera_token::Requirement {
        aal: None,
        max_age: Some(600),
    };
    assert!(session.require_assurance(&recent, verifier.now()).is_ok());
}
