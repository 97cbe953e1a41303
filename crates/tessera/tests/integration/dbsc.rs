//! Device Bound Session Credentials (W3C DBSC draft) over HTTP, driven by a scripted browser
//! that follows the draft step by step: Chromium on Linux does not register DBSC sessions here
//! (see docs/bound-tokens.md). Keys are P-256 keys made by the test; JWTs are signed by it.

use regex::Regex;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tessera_server::service::EventKind;

use crate::dpop::ProofKey;
use crate::support::{PASSWORD, TestServer, audit_details, audit_of, problem_code, set_cookie};

/// The value of the first `name` parameter of a structured-field header.
fn param(header: &str, name: &str) -> String {
    let pattern = Regex::new(&format!(r#"{name}="([^"]*)""#)).unwrap();
    pattern.captures(header).unwrap()[1].to_owned()
}

/// A registration or refresh JWT (`dbsc+jwt`): the key in the header for a registration.
fn response_jwt(key: &ProofKey, challenge: &str, with_key: bool) -> String {
    let mut header = json!({ "typ": "dbsc+jwt", "alg": "ES256" });
    if with_key {
        header["jwk"] = key.jwk();
    }
    key.sign_jwt(&header, &json!({ "jti": challenge }))
}

/// A cookie login: the cookie and the registration offered with it, if any.
async fn cookie_login(server: &TestServer) -> (String, Option<String>) {
    let response = server.login("alice", PASSWORD, "cookie").await;
    assert_eq!(response.status(), StatusCode::OK);
    let offer = response
        .headers()
        .get("secure-session-registration")
        .map(|v| v.to_str().unwrap().to_owned());
    (set_cookie(&response).unwrap(), offer)
}

async fn register(server: &TestServer, path: &str, cookie: &str, jwt: &str) -> Response {
    server
        .client
        .post(server.url(path))
        .header("cookie", format!("__Host-tessera={cookie}"))
        .header("secure-session-response", jwt)
        .send()
        .await
        .unwrap()
}

async fn session_status(server: &TestServer, cookie: &str) -> (StatusCode, bool) {
    let response = server
        .client
        .get(server.url("/v1/session"))
        .header("cookie", format!("__Host-tessera={cookie}"))
        .send()
        .await
        .unwrap();
    (
        response.status(),
        response.headers().contains_key("set-cookie"),
    )
}

async fn refresh(server: &TestServer, sid: &str, jwt: Option<&str>) -> Response {
    let mut request = server
        .client
        .post(server.url("/v1/dbsc/refresh"))
        .header("sec-secure-session-id", sid);
    if let Some(jwt) = jwt {
        request = request.header("secure-session-response", jwt);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_registered_browser_keeps_a_short_cookie_alive_only_with_its_key() {
    let server = TestServer::start_with(|c| {
        c.dbsc = true;
        c.cookie_format = tessera_server::config::TokenFormat::Jwt;
    })
    .await;
    let key = ProofKey::p256();
    let (cookie, offer) = cookie_login(&server).await;
    let offer = offer.expect("a cookie login offers a registration");
    assert!(offer.starts_with("(ES256);path="), "{offer}");
    let (path, challenge) = (param(&offer, "path"), param(&offer, "challenge"));
    assert_eq!(path, "/v1/dbsc/registration");

    // A challenge issued for another session is refused, and so is a registration without a
    // response or signed by another key than the one it names.
    let (other_cookie, other_offer) = cookie_login(&server).await;
    let other_challenge = param(&other_offer.unwrap(), "challenge");
    let response = register(
        &server,
        &path,
        &cookie,
        &response_jwt(&key, &other_challenge, true),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let thief = ProofKey::p256();
    let forged = thief.sign_jwt(
        &json!({ "typ": "dbsc+jwt", "alg": "ES256", "jwk": key.jwk() }),
        &json!({ "jti": challenge }),
    );
    assert_eq!(
        register(&server, &path, &cookie, &forged).await.status(),
        StatusCode::FORBIDDEN
    );

    // The registration: a bound session replaces the cookie's.
    let response = register(
        &server,
        &path,
        &cookie,
        &response_jwt(&key, &challenge, true),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let bound = set_cookie(&response).unwrap();
    let max_age = crate::support::raw_set_cookie(&response).unwrap();
    assert!(max_age.contains("Max-Age=600"), "{max_age}");
    assert!(
        response
            .headers()
            .get("secure-session-registration")
            .is_none()
    );
    let instructions: Value = response.json().await.unwrap();
    assert_eq!(instructions["refresh_url"], "/v1/dbsc/refresh");
    assert_eq!(instructions["credentials"][0]["type"], "cookie");
    assert_eq!(instructions["credentials"][0]["name"], "__Host-tessera");
    let sid = instructions["session_identifier"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        session_status(&server, &cookie).await.0,
        StatusCode::UNAUTHORIZED,
        "the unbound session ended"
    );
    assert_eq!(
        session_status(&server, &bound).await,
        (StatusCode::OK, false)
    );
    // The other session's challenge is still its own: it registers with it.
    let response = register(
        &server,
        &path,
        &other_cookie,
        &response_jwt(&thief, &other_challenge, true),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    // The bound cookie is never renewed on use, and a stolen one dies with its JWT.
    server.advance(400);
    assert_eq!(
        session_status(&server, &bound).await,
        (StatusCode::OK, false)
    );
    // Past its JWT's 600 s and the 30 s leeway every JWT gets.
    server.advance(231);
    assert_eq!(
        session_status(&server, &bound).await.0,
        StatusCode::UNAUTHORIZED
    );

    // A refresh: a challenge first, then only a signature by the registered key renews.
    let asked = refresh(&server, &sid, None).await;
    assert_eq!(asked.status(), StatusCode::FORBIDDEN);
    let header = asked.headers()["secure-session-challenge"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(header.ends_with(&format!(";id=\"{sid}\"")), "{header}");
    let refresh_challenge = header[1..header.find("\";id=").unwrap()].to_owned();
    let stolen = refresh(
        &server,
        &sid,
        Some(&response_jwt(&thief, &refresh_challenge, false)),
    )
    .await;
    assert_eq!(
        stolen.status(),
        StatusCode::FORBIDDEN,
        "signed by another key"
    );
    let answer = response_jwt(&key, &refresh_challenge, false);
    let renewed = refresh(&server, &sid, Some(&answer)).await;
    assert_eq!(renewed.status(), StatusCode::OK);
    let next = set_cookie(&renewed).unwrap();
    let body: Value = renewed.json().await.unwrap();
    assert_eq!(body["session_identifier"], sid.as_str());
    assert_eq!(
        session_status(&server, &next).await,
        (StatusCode::OK, false)
    );
    // The same answer again: a challenge is answered once.
    let replayed = refresh(&server, &sid, Some(&answer)).await;
    assert_eq!(replayed.status(), StatusCode::FORBIDDEN);
    // A session that is not device-bound, or none, has nothing to refresh.
    for unknown in ["no-such-session", "x"] {
        let response = refresh(&server, unknown, None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
    let audited = audit_of(&server, EventKind::DeviceBound).await;
    assert_eq!(audited.len(), 2, "each registration is audited");
    let refused = audit_details(&server, EventKind::DeviceRefused).await;
    assert_eq!(refused.len(), 4, "{refused:?}");
    assert!(refused[0].contains("another session"), "{refused:?}");
    assert!(refused[1].starts_with("registration: "), "{refused:?}");
    assert!(refused[2].starts_with("refresh: "), "{refused:?}");
    assert!(refused[3].contains("answered before"), "{refused:?}");
}

#[tokio::test]
async fn without_dbsc_cookies_are_as_before_and_nothing_registers() {
    let server = TestServer::start().await;
    let (cookie, offer) = cookie_login(&server).await;
    assert_eq!(offer, None);
    let key = ProofKey::p256();
    let response = register(
        &server,
        "/v1/dbsc/registration",
        &cookie,
        &response_jwt(&key, "c", true),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem_code(response).await, "not_found");
    assert_eq!(
        refresh(&server, "s", None).await.status(),
        StatusCode::NOT_FOUND
    );
    // DBSC reads every bound session on each request: it refuses stateless mode.
    let config = tessera_server::Config {
        dbsc: true,
        stateless: true,
        ..tessera_server::Config::default()
    };
    assert!(config.validate().is_err());
}
