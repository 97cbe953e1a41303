//! DPoP-bound bearer tokens (RFC 9449) over HTTP: logins and refreshes that bind, the uses
//! that need a proof, and the attacks on them — a proof replayed, made for another request,
//! too old or too new, by another key; a bound token sent as a plain bearer token; a stolen
//! refresh token without the key. Proofs are made here, with aws-lc-rs keys and a thumbprint
//! computed by this file (RFC 7638), not with tessera's own code; `interop.rs` drives the same
//! flows with npm's `dpop`.

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use tessera_core::b64;
use tessera_server::config::{DpopMode, TokenFormat};
use tessera_server::service::EventKind;

use crate::support::{PASSWORD, TestServer, audit_details, claims_of, problem_code};

/// A client's DPoP key: makes proofs and names itself as a public JWK.
pub enum ProofKey {
    Ed25519(Ed25519KeyPair),
    P256(EcdsaKeyPair),
}

impl ProofKey {
    pub fn p256() -> ProofKey {
        ProofKey::P256(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap())
    }

    pub fn ed25519() -> ProofKey {
        ProofKey::Ed25519(Ed25519KeyPair::generate().unwrap())
    }

    fn alg(&self) -> &'static str {
        match self {
            ProofKey::Ed25519(_) => "EdDSA",
            ProofKey::P256(_) => "ES256",
        }
    }

    /// The public key's members, in RFC 7638's order (lexicographic).
    fn members(&self) -> Vec<(&'static str, String)> {
        match self {
            ProofKey::Ed25519(k) => vec![
                ("crv", "Ed25519".into()),
                ("kty", "OKP".into()),
                ("x", b64::encode(k.public_key().as_ref())),
            ],
            ProofKey::P256(k) => {
                let point = k.public_key().as_ref();
                vec![
                    ("crv", "P-256".into()),
                    ("kty", "EC".into()),
                    ("x", b64::encode(&point[1..33])),
                    ("y", b64::encode(&point[33..65])),
                ]
            }
        }
    }

    pub fn jwk(&self) -> Value {
        Value::Object(
            self.members()
                .into_iter()
                .map(|(name, value)| (name.to_owned(), Value::String(value)))
                .collect(),
        )
    }

    /// RFC 7638: SHA-256 of the required members, in order, without whitespace.
    pub fn thumbprint(&self) -> String {
        let canonical = self
            .members()
            .iter()
            .map(|(name, value)| format!("\"{name}\":\"{value}\""))
            .collect::<Vec<_>>()
            .join(",");
        let canonical = format!("{{{canonical}}}");
        b64::encode(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    }

    /// A proof with these claims (and the standard header).
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({ "typ": "dpop+jwt", "alg": self.alg(), "jwk": self.jwk() });
        self.sign_jwt(&header, claims)
    }

    /// A JWT with this header and these claims, signed by this key.
    pub fn sign_jwt(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64::encode(header.to_string().as_bytes()),
            b64::encode(claims.to_string().as_bytes())
        );
        let signature = match self {
            ProofKey::Ed25519(k) => k.sign(input.as_bytes()).as_ref().to_vec(),
            ProofKey::P256(k) => k
                .sign(&SystemRandom::new(), input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
        };
        format!("{input}.{}", b64::encode(&signature))
    }

    /// A fresh proof for `method url` at `now`, with `ath` when a token is presented.
    pub fn proof(&self, method: &str, url: &str, now: i64, token: Option<&str>) -> String {
        self.sign(&claims(method, url, now, token))
    }
}

/// The claims of a fresh proof: a random `jti`.
pub fn claims(method: &str, url: &str, now: i64, token: Option<&str>) -> Value {
    let mut jti = [0u8; 16];
    SystemRandom::new().fill(&mut jti).unwrap();
    let mut claims = json!({ "jti": b64::encode(&jti), "htm": method, "htu": url, "iat": now });
    if let Some(token) = token {
        claims["ath"] = json!(ath(token));
    }
    claims
}

/// RFC 9449 §4.2: base64url(SHA-256(token)).
pub fn ath(token: &str) -> String {
    b64::encode(digest::digest(&digest::SHA256, token.as_bytes()).as_ref())
}

/// A bearer login of alice with a proof by `key`; the body.
async fn bound_login(server: &TestServer, key: &ProofKey) -> Value {
    bound_login_at(server, key, &server.url("/v1/login")).await
}

/// [`bound_login`] with a proof for `htu`, the login's URL as tessera sees it.
async fn bound_login_at(server: &TestServer, key: &ProofKey, htu: &str) -> Value {
    let response = server
        .client
        .post(server.url("/v1/login"))
        .header("DPoP", key.proof("POST", htu, server.service.now(), None))
        .json(&json!({ "username": "alice", "password": PASSWORD, "delivery": "bearer" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// `GET /v1/session` with `Authorization: <scheme> <token>` and these `DPoP` headers.
async fn session_with(
    server: &TestServer,
    scheme: &str,
    token: &str,
    proofs: &[String],
) -> Response {
    let mut request = server
        .client
        .get(server.url("/v1/session"))
        .header("Authorization", format!("{scheme} {token}"));
    for proof in proofs {
        request = request.header("DPoP", proof);
    }
    request.send().await.unwrap()
}

/// A refresh with these `DPoP` headers.
async fn refresh_with(server: &TestServer, refresh_token: &str, proofs: &[String]) -> Response {
    let mut request = server.client.post(server.url("/v1/refresh"));
    for proof in proofs {
        request = request.header("DPoP", proof);
    }
    request
        .json(&json!({ "refresh_token": refresh_token }))
        .send()
        .await
        .unwrap()
}

/// The refusal's code, after checking it is a 401 with RFC 9449's challenge for that code.
async fn dpop_refusal(response: Response) -> String {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    let code = problem_code(response).await;
    assert!(
        challenge.starts_with(&format!("DPoP error=\"{code}\"")) && challenge.contains("algs="),
        "{challenge}"
    );
    code
}

/// The details of the `dpop.refused` events, oldest first.
async fn refusals_audited(server: &TestServer) -> Vec<String> {
    audit_details(server, EventKind::DpopRefused).await
}

#[tokio::test]
async fn a_bound_jwt_works_only_with_a_fresh_proof_by_its_key_for_each_request() {
    let server = TestServer::start().await;
    let key = ProofKey::p256();
    let body = bound_login(&server, &key).await;
    assert_eq!(body["token_type"], "DPoP");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(
        claims_of(token)["cnf"]["jkt"],
        key.thumbprint(),
        "the JWT names the key by its RFC 7638 thumbprint"
    );
    let url = server.url("/v1/session");
    let now = server.service.now();

    let proof = key.proof("GET", &url, now, Some(token));
    let response = session_with(&server, "DPoP", token, std::slice::from_ref(&proof)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        server.service.dpop_proofs_remembered(),
        2,
        "the login's proof and this one"
    );
    let session: Value = response.json().await.unwrap();
    assert_eq!(session["user"]["username"], "alice");

    // The same proof again: a replay.
    let replay = session_with(&server, "DPoP", token, &[proof]).await;
    assert_eq!(dpop_refusal(replay).await, "invalid_dpop_proof");
    // The token alone, as a plain bearer token or as DPoP without a proof: a stolen token.
    for scheme in ["Bearer", "DPoP"] {
        let stolen = session_with(&server, scheme, token, &[]).await;
        assert_eq!(dpop_refusal(stolen).await, "invalid_dpop_proof", "{scheme}");
    }
    // A valid proof by another key.
    let thief = ProofKey::ed25519();
    let other_key = session_with(
        &server,
        "DPoP",
        token,
        &[thief.proof("GET", &url, now, Some(token))],
    )
    .await;
    assert_eq!(dpop_refusal(other_key).await, "invalid_dpop_proof");
    assert_eq!(
        refusals_audited(&server).await,
        ["replayed", "missing", "missing", "wrong_key"],
        "every refusal that suggests a stolen token is audited, with why"
    );

    // Proofs by the right key that do not fit the request.
    let other_token = "tsr_not-this-one";
    let misfits: [(&str, Value); 8] = [
        ("another method", claims("POST", &url, now, Some(token))),
        (
            "another URL",
            claims("GET", &server.url("/v1/sessions"), now, Some(token)),
        ),
        (
            "another host",
            claims(
                "GET",
                "https://elsewhere.example/v1/session",
                now,
                Some(token),
            ),
        ),
        ("too old", claims("GET", &url, now - 120, Some(token))),
        (
            "from the future",
            claims("GET", &url, now + 120, Some(token)),
        ),
        ("without ath", claims("GET", &url, now, None)),
        (
            "for another token",
            claims("GET", &url, now, Some(other_token)),
        ),
        ("a lower-case method", claims("get", &url, now, Some(token))),
    ];
    for (what, claims) in misfits {
        let response = session_with(&server, "DPoP", token, &[key.sign(&claims)]).await;
        assert_eq!(dpop_refusal(response).await, "invalid_dpop_proof", "{what}");
    }
    // Two proofs, even good ones: RFC 9449 §4.3 wants exactly one.
    let two = [
        key.proof("GET", &url, now, Some(token)),
        key.proof("GET", &url, now, Some(token)),
    ];
    let response = session_with(&server, "DPoP", token, &two).await;
    assert_eq!(dpop_refusal(response).await, "invalid_dpop_proof");
    // Garbage in the header is refused the same way, never a 500.
    for garbage in ["", "x", "a.b.c", &"A".repeat(20_000)] {
        let response = session_with(&server, "DPoP", token, &[garbage.to_owned()]).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{garbage:.20}");
    }
    // After all that, the rightful holder's next fresh proof still works.
    let fresh = key.proof("GET", &url, now, Some(token));
    assert_eq!(
        session_with(&server, "DPoP", token, &[fresh])
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn one_proof_sent_many_times_at_once_to_one_instance_is_accepted_once() {
    // The replay check and the proof's use are one step: a burst of copies, racing each other
    // on separate connections of one server, gets exactly one answer through.
    const COPIES: usize = 16;
    let server = TestServer::start().await;
    let key = ProofKey::ed25519();
    let body = bound_login(&server, &key).await;
    let token = body["access_token"].as_str().unwrap();
    let url = server.url("/v1/session");
    for round in 0..5 {
        let proof = key.proof("GET", &url, server.service.now(), Some(token));
        let burst =
            (0..COPIES).map(|_| session_with(&server, "DPoP", token, std::slice::from_ref(&proof)));
        let answers = futures_util::future::join_all(burst).await;
        let mut accepted = 0;
        for answer in answers {
            if answer.status() == StatusCode::OK {
                accepted += 1;
            } else {
                assert_eq!(
                    dpop_refusal(answer).await,
                    "invalid_dpop_proof",
                    "round {round}"
                );
            }
        }
        assert_eq!(
            accepted, 1,
            "round {round}: one copy of the proof gets through"
        );
    }
    let replayed = refusals_audited(&server)
        .await
        .iter()
        .filter(|why| *why == "replayed")
        .count();
    assert_eq!(
        replayed,
        5 * (COPIES - 1),
        "every refused copy is audited as a replay"
    );
}

#[tokio::test]
async fn a_bound_refresh_token_is_useless_without_its_key_and_stays_unspent() {
    let server = TestServer::start().await;
    let key = ProofKey::ed25519();
    let body = bound_login(&server, &key).await;
    let refresh = body["refresh_token"].as_str().unwrap();
    let url = server.url("/v1/refresh");
    let now = server.service.now();

    // Stolen without the key: no proof, or a proof by the thief's key. Token endpoints answer
    // 400 (RFC 9449 §5), and the token is not spent.
    let thief = ProofKey::p256();
    for proofs in [vec![], vec![thief.proof("POST", &url, now, None)]] {
        let response = refresh_with(&server, refresh, &proofs).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(problem_code(response).await, "invalid_dpop_proof");
    }
    assert_eq!(refusals_audited(&server).await, ["missing", "wrong_key"]);

    // The holder refreshes with a proof by its key: new tokens bound to the same key.
    let response = refresh_with(&server, refresh, &[key.proof("POST", &url, now, None)]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let renewed: Value = response.json().await.unwrap();
    assert_eq!(renewed["token_type"], "DPoP");
    let token = renewed["access_token"].as_str().unwrap();
    assert_eq!(claims_of(token)["cnf"]["jkt"], key.thumbprint());
    let proof = key.proof("GET", &server.url("/v1/session"), now, Some(token));
    assert_eq!(
        session_with(&server, "DPoP", token, &[proof])
            .await
            .status(),
        StatusCode::OK
    );
    // A proof made for the refresh is not one for a resource, and the reverse.
    let next = renewed["refresh_token"].as_str().unwrap();
    let for_session = key.proof("GET", &server.url("/v1/session"), now, None);
    let response = refresh_with(&server, next, &[for_session]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn opaque_tokens_are_bound_through_their_session_record() {
    let server = TestServer::start_with(|c| c.bearer_format = TokenFormat::Opaque).await;
    let key = ProofKey::p256();
    let body = bound_login(&server, &key).await;
    assert_eq!(body["token_type"], "DPoP");
    let token = body["access_token"].as_str().unwrap();
    assert!(token.starts_with("tsr_"), "{token}");
    let url = server.url("/v1/session");
    let now = server.service.now();
    let proof = key.proof("GET", &url, now, Some(token));
    assert_eq!(
        session_with(&server, "DPoP", token, &[proof])
            .await
            .status(),
        StatusCode::OK
    );
    let stolen = session_with(&server, "Bearer", token, &[]).await;
    assert_eq!(dpop_refusal(stolen).await, "invalid_dpop_proof");
    // Any other endpoint that takes the token checks the proof against its own URL.
    let sessions = server.url("/v1/sessions");
    let response = server
        .client
        .get(&sessions)
        .header("Authorization", format!("DPoP {token}"))
        .header("DPoP", key.proof("GET", &sessions, now, Some(token)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = server
        .client
        .post(server.url("/v1/logout"))
        .header("Authorization", format!("DPoP {token}"))
        .header("DPoP", key.proof("POST", &sessions, now, Some(token)))
        .send()
        .await
        .unwrap();
    assert_eq!(dpop_refusal(response).await, "invalid_dpop_proof");
}

#[tokio::test]
async fn an_unbound_token_is_not_accepted_as_a_bound_one() {
    let server = TestServer::start().await;
    let response = server.login("alice", PASSWORD, "bearer").await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    let token = body["access_token"].as_str().unwrap();
    assert!(claims_of(token).get("cnf").is_none());
    let key = ProofKey::p256();
    let proof = key.proof(
        "GET",
        &server.url("/v1/session"),
        server.service.now(),
        Some(token),
    );
    let response = session_with(&server, "DPoP", token, &[proof]).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(problem_code(response).await, "invalid_token");
    // As a bearer token it works, a DPoP header beside it being ignored.
    let proof = key.proof(
        "GET",
        &server.url("/v1/session"),
        server.service.now(),
        Some(token),
    );
    let response = session_with(&server, "Bearer", token, &[proof]).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_dpop_setting_decides_whether_tokens_are_bound() {
    let key = ProofKey::p256();
    // off: the proof is ignored, the tokens are plain bearer tokens.
    let off = TestServer::start_with(|c| c.dpop = DpopMode::Off).await;
    let body = bound_login(&off, &key).await;
    assert_eq!(body["token_type"], "Bearer");
    assert!(
        claims_of(body["access_token"].as_str().unwrap())
            .get("cnf")
            .is_none()
    );

    // required: a bearer login without a proof is refused; cookies are not affected.
    let required = TestServer::start_with(|c| c.dpop = DpopMode::Required).await;
    let response = required.login("alice", PASSWORD, "bearer").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem_code(response).await, "invalid_dpop_proof");
    assert_eq!(
        required.login("alice", PASSWORD, "cookie").await.status(),
        StatusCode::OK
    );
    assert_eq!(bound_login(&required, &key).await["token_type"], "DPoP");

    // allowed (the default): a proof with a cookie login is a client's mistake, refused.
    let allowed = TestServer::start().await;
    let url = allowed.url("/v1/login");
    let response = allowed
        .client
        .post(&url)
        .header("DPoP", key.proof("POST", &url, allowed.service.now(), None))
        .json(&json!({ "username": "alice", "password": PASSWORD, "delivery": "cookie" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem_code(response).await, "invalid_dpop_proof");
    // And a login proof must be for the login: method and URL.
    let response = allowed
        .client
        .post(&url)
        .header("DPoP", key.proof("GET", &url, allowed.service.now(), None))
        .json(&json!({ "username": "alice", "password": PASSWORD, "delivery": "bearer" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn with_nonces_on_a_proof_must_carry_a_recent_server_nonce() {
    let server = TestServer::start_with(|c| c.dpop_nonce = true).await;
    let key = ProofKey::p256();
    let url = server.url("/v1/login");
    let login = |proof: String| {
        server
            .client
            .post(&url)
            .header("DPoP", proof)
            .json(&json!({ "username": "alice", "password": PASSWORD, "delivery": "bearer" }))
            .send()
    };
    // Without a nonce: refused, with the nonce to use (RFC 9449 §8).
    let now = server.service.now();
    let response = login(key.proof("POST", &url, now, None)).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let nonce = response.headers()["dpop-nonce"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(problem_code(response).await, "use_dpop_nonce");
    // With it: bound tokens.
    let mut with_nonce = claims("POST", &url, now, None);
    with_nonce["nonce"] = json!(nonce);
    let response = login(key.sign(&with_nonce)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("dpop-nonce"));
    let body: Value = response.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    // A resource request without the nonce: 401 use_dpop_nonce with a challenge and a nonce.
    let session = server.url("/v1/session");
    let response = session_with(
        &server,
        "DPoP",
        token,
        &[key.proof("GET", &session, now, Some(token))],
    )
    .await;
    assert!(response.headers().contains_key("dpop-nonce"));
    assert_eq!(dpop_refusal(response).await, "use_dpop_nonce");
    let mut good = claims("GET", &session, now, Some(token));
    good["nonce"] = json!(nonce);
    let response = session_with(&server, "DPoP", token, &[key.sign(&good)]).await;
    assert_eq!(response.status(), StatusCode::OK);
    // A made-up nonce, and the first one once two windows have passed, are refused.
    for (advance, made_up) in [(0, true), (300, false)] {
        server.advance(advance);
        let now = server.service.now();
        let mut stale = claims("GET", &session, now, Some(token));
        stale["nonce"] = json!(if made_up {
            "AAAAAAAAAAAAAAAAAAAAAA"
        } else {
            &nonce
        });
        let response = session_with(&server, "DPoP", token, &[key.sign(&stale)]).await;
        assert_eq!(dpop_refusal(response).await, "use_dpop_nonce");
    }
}

#[tokio::test]
async fn forward_auth_checks_the_proof_against_the_request_the_proxy_names() {
    let server = TestServer::start_with(|c| c.behind_proxy = true).await;
    let key = ProofKey::ed25519();
    // Behind a proxy, a request that does not say otherwise came in over HTTPS.
    let login_url = server.url("/v1/login").replacen("http:", "https:", 1);
    let body = bound_login_at(&server, &key, &login_url).await;
    let token = body["access_token"].as_str().unwrap();
    let now = server.service.now();
    let verify = |proof: String, scheme: &str| {
        server
            .client
            .request(Method::GET, server.url("/v1/verify"))
            .header("Authorization", format!("{scheme} {token}"))
            .header("DPoP", proof)
            .header("X-Forwarded-Method", "DELETE")
            .header("X-Forwarded-Proto", "https")
            .header("X-Forwarded-Host", "app.example")
            .header("X-Forwarded-Uri", "/docs/7?draft=1")
            .send()
    };
    // The proof names the protected request (the query is not part of htu).
    let app_url = "https://app.example/docs/7";
    let response = verify(key.proof("DELETE", app_url, now, Some(token)), "DPoP")
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-tessera-user"], "alice");
    // Not tessera's own verify URL, not another method, not as a bearer token.
    for (proof, scheme) in [
        (
            key.proof("GET", &server.url("/v1/verify"), now, Some(token)),
            "DPoP",
        ),
        (key.proof("GET", app_url, now, Some(token)), "DPoP"),
        (key.proof("DELETE", app_url, now, Some(token)), "Bearer"),
    ] {
        let response = verify(proof, scheme).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(problem_code(response).await, "invalid_dpop_proof");
    }
}

/// The embedded verifier (`tessera-verify`) in a service of its own: a bound JWT is accepted
/// with a fresh proof by its key for the service's URL, once; as a bearer token, with a proof
/// by another key, or by a verifier not set up for DPoP, it is refused.
#[tokio::test]
async fn the_embedded_verifier_takes_a_bound_token_only_with_a_fresh_proof() {
    use axum::routing::get;
    use tessera_verify::{DpopOptions, Session, Verifier};

    // The verifier reads the system clock: the server starts at the real time too.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let server = TestServer::start_custom(|_| {}, now, |store| std::sync::Arc::new(store)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service = format!("http://{}", listener.local_addr().unwrap());
    let build = |dpop: bool| {
        let builder = Verifier::builder(&server.base).without_revocation_feed();
        let builder = if dpop {
            builder.dpop(DpopOptions::new(&service))
        } else {
            builder
        };
        builder.build()
    };
    let (with_dpop, without) = (build(true).await.unwrap(), build(false).await.unwrap());
    let app = |verifier: Verifier| {
        axum::Router::new()
            .route(
                "/me",
                get(|session: Session| async move { session.name().to_owned() }),
            )
            .with_state(verifier)
    };
    tokio::spawn(async move { axum::serve(listener, app(with_dpop)).await });
    let key = ProofKey::p256();
    let token = bound_login(&server, &key).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = format!("{service}/me");
    let call = |scheme: &str, proof: Option<String>| {
        let mut request = server
            .client
            .get(&me)
            .header("Authorization", format!("{scheme} {token}"));
        if let Some(proof) = proof {
            request = request.header("DPoP", proof);
        }
        request.send()
    };
    let proof = key.proof("GET", &me, now, Some(&token));
    let response = call("DPoP", Some(proof.clone())).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "alice");
    let thief = ProofKey::ed25519();
    for (what, scheme, proof) in [
        ("replayed", "DPoP", Some(proof)),
        ("as a bearer token", "Bearer", None),
        ("without a proof", "DPoP", None),
        (
            "by another key",
            "DPoP",
            Some(thief.proof("GET", &me, now, Some(&token))),
        ),
        (
            "for another URL",
            "DPoP",
            Some(key.proof("GET", &server.url("/v1/session"), now, Some(&token))),
        ),
    ] {
        let response = call(scheme, proof).await.unwrap();
        assert_eq!(dpop_refusal(response).await, "invalid_dpop_proof", "{what}");
    }
    // A verifier not set up for DPoP refuses bound tokens however they come.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain = format!("http://{}/me", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app(without)).await });
    for scheme in ["DPoP", "Bearer"] {
        let response = server
            .client
            .get(&plain)
            .header("Authorization", format!("{scheme} {token}"))
            .header("DPoP", key.proof("GET", &plain, now, Some(&token)))
            .send()
            .await
            .unwrap();
        assert_eq!(
            dpop_refusal(response).await,
            "invalid_dpop_proof",
            "{scheme}"
        );
    }
}
