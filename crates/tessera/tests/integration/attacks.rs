//! Every known attack on tessera's tokens, one test each, over real HTTP.
//!
//! Each test builds the attack token, presents it, and asserts what the client sees: status
//! 401, the problem `code`, the RFC 6750 challenge for bearer tokens, and that the server is
//! still healthy afterwards (`/healthz` answers and the victim's genuine session still works).
//!
//! Forged JWTs are signed with the server's *real* current key wherever the attack allows, so
//! that the one property under attack is what makes the server refuse them; several tests
//! first check that the same forging, without the attack, is accepted.

use std::sync::Arc;

use aws_lc_rs::hmac;
use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_core::b64;
use tessera_core::keys::{Algorithm, KeyRecord};
use tessera_server::config::TokenFormat;
use tessera_store::Layered;

use crate::support::*;

/// The corpus of refused tokens shared with tessera-token's tests.
#[path = "../../../tessera-token/tests/vectors/corpus.rs"]
mod corpus;

// ------------------------------------------------------------------------------ helpers

/// A server issuing JWT bearer tokens signed with `alg`, and alice's genuine bearer session.
async fn jwt_server(alg: &str) -> (TestServer, ClientSession) {
    let server = TestServer::start_with(|c| c.jwt_algorithm = alg.parse().unwrap()).await;
    let session = server.session("alice", Delivery::Bearer).await;
    (server, session)
}

/// `header.payload.signature` from raw parts, each strictly base64url-encoded.
fn assemble(header: &[u8], payload: &[u8], signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64::encode(header),
        b64::encode(payload),
        b64::encode(signature)
    )
}

/// HMAC-SHA-256 over `header.payload` with an arbitrary key: what an attacker can compute.
fn hs256_with(key: &[u8], header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64::encode(header.to_string().as_bytes()),
        b64::encode(claims.to_string().as_bytes())
    );
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), input.as_bytes());
    format!("{input}.{}", b64::encode(tag.as_ref()))
}

async fn present(server: &TestServer, token: &str) -> reqwest::Response {
    server
        .client
        .get(server.url("/v1/session"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// The token is accepted (the control case of a forging technique).
async fn assert_accepted(server: &TestServer, token: &str, what: &str) {
    let response = present(server, token).await;
    assert_eq!(response.status(), StatusCode::OK, "control: {what}");
}

/// The server answers and the genuine session still works.
async fn assert_healthy(server: &TestServer, genuine: &ClientSession) {
    let health = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK, "healthz after the attack");
    let response = server
        .send(reqwest::Method::GET, "/v1/session", genuine)
        .await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the genuine session still works after the attack"
    );
}

/// The bearer token is refused with 401, the problem `code` and the RFC 6750 challenge, and
/// the server stays healthy.
async fn assert_refused(
    server: &TestServer,
    genuine: &ClientSession,
    token: &str,
    code: &str,
    what: &str,
) {
    let response = present(server, token).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\"",
        "{what}"
    );
    assert_eq!(problem_code(response).await, code, "{what}");
    assert_healthy(server, genuine).await;
}

/// The base64url character after `c`: for the last character of a canonical encoding (whose
/// unused low bits are zero) this sets the lowest unused bit, changing no decoded byte.
fn next_base64url_char(c: &str) -> char {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let index = alphabet.iter().position(|a| c.as_bytes() == [*a]).unwrap();
    assert_eq!(
        index % 4,
        0,
        "{c} is not the last character of a canonical encoding"
    );
    alphabet[index + 1] as char
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Order of the P-256 group, big-endian.
const P256_N: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";
/// The P-256 field prime, big-endian (larger than the group order).
const P256_P: &str = "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff";
/// Order of the Ed25519 base point, big-endian.
const ED25519_L: &str = "1000000000000000000000000000000014def9dea2f79cd65812631a5cf5d3ed";

/// `a - b` for 32-byte big-endian numbers (`a >= b`).
fn sub_be(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = 0;
        if d < 0 {
            d += 256;
            borrow = 1;
        }
        out[i] = d as u8;
    }
    assert_eq!(borrow, 0);
    out
}

/// `a + b` for 32-byte little-endian numbers; panics on overflow.
fn add_le(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let s = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = s as u8;
        carry = s >> 8;
    }
    assert_eq!(carry, 0);
    out
}

// ------------------------------------------------------------------ algorithm attacks

#[tokio::test]
async fn alg_none_in_any_letter_case_is_refused() {
    let (server, genuine) = jwt_server("EdDSA").await;
    let claims = claims_of(&genuine.access);
    let kid = header_of(&genuine.access)["kid"].clone();
    for alg in ["none", "None", "NONE", "nOnE", "NoNe"] {
        let header = json!({"alg": alg, "kid": kid, "typ": "at+jwt"});
        let unsigned = assemble(
            header.to_string().as_bytes(),
            claims.to_string().as_bytes(),
            b"",
        );
        assert_refused(
            &server,
            &genuine,
            &unsigned,
            "invalid_token",
            &format!("{alg}, empty signature"),
        )
        .await;
        // Even with a genuine signature over the same input, `none` is not our key's alg.
        let signed = sign_json(&server, &header, &claims);
        assert_refused(
            &server,
            &genuine,
            &signed,
            "invalid_token",
            &format!("{alg}, signed"),
        )
        .await;
    }
}

#[tokio::test]
async fn algorithm_substitution_is_refused() {
    for served in ["EdDSA", "ES256", "HS256"] {
        let (server, genuine) = jwt_server(served).await;
        let claims = claims_of(&genuine.access);
        let mut header = header_of(&genuine.access);
        assert_accepted(&server, &sign_json(&server, &header, &claims), served).await;
        for alg in [
            "EdDSA", "ES256", "HS256", "HS384", "HS512", "RS256", "PS256", "ES384", "ES512",
            "eddsa", "es256", "hs256", "Ed25519", "EdDSA ", "",
        ] {
            if alg == served {
                continue;
            }
            header["alg"] = json!(alg);
            // Signed by the genuine key: only the header's alg differs.
            let token = sign_json(&server, &header, &claims);
            assert_refused(
                &server,
                &genuine,
                &token,
                "invalid_token",
                &format!("{served} key, header alg {alg:?}"),
            )
            .await;
        }
    }
}

#[tokio::test]
async fn hs256_keyed_with_our_public_key_in_any_encoding_is_refused() {
    // The classic key confusion: the verifier is tricked into using the public key (which
    // the attacker knows from the JWKS) as an HMAC secret.
    for alg in ["EdDSA", "ES256"] {
        let (server, genuine) = jwt_server(alg).await;
        let jwks_text = server
            .client
            .get(server.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let jwks: Value = serde_json::from_str(&jwks_text).unwrap();
        let jwk = &jwks["keys"][0];
        let (raw, spki_prefix) = if alg == "EdDSA" {
            (
                b64::decode(jwk["x"].as_str().unwrap()).unwrap(),
                hex("302a300506032b6570032100"),
            )
        } else {
            let mut point = vec![4u8];
            point.extend(b64::decode(jwk["x"].as_str().unwrap()).unwrap());
            point.extend(b64::decode(jwk["y"].as_str().unwrap()).unwrap());
            (
                point,
                hex("3059301306072a8648ce3d020106082a8648ce3d030107034200"),
            )
        };
        let der = [spki_prefix, raw.clone()].concat();
        let b64_der = base64::engine::general_purpose::STANDARD.encode(&der);
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{b64_der}\n-----END PUBLIC KEY-----\n");
        let encodings: Vec<(&str, Vec<u8>)> = vec![
            ("raw", raw),
            ("DER SubjectPublicKeyInfo", der),
            ("PEM", pem.clone().into_bytes()),
            (
                "PEM without final newline",
                pem.trim_end().as_bytes().to_vec(),
            ),
            ("JWK text", jwk.to_string().into_bytes()),
            ("JWKS document text", jwks_text.clone().into_bytes()),
            (
                "JWK x coordinate",
                jwk["x"].as_str().unwrap().as_bytes().to_vec(),
            ),
        ];
        let claims = claims_of(&genuine.access);
        let mut header = header_of(&genuine.access);
        header["alg"] = json!("HS256");
        for (name, key) in encodings {
            let token = hs256_with(&key, &header, &claims);
            assert_refused(
                &server,
                &genuine,
                &token,
                "invalid_token",
                &format!("{alg} public key as HS256 secret, {name}"),
            )
            .await;
        }
    }
}

// ------------------------------------------------------------------ header attacks

#[tokio::test]
async fn jku_and_x5u_headers_are_refused_without_any_outbound_connection() {
    let (server, genuine) = jwt_server("EdDSA").await;
    // Where an attacker would host their key set: a listener nobody should ever dial.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let claims = claims_of(&genuine.access);
    let attacker = KeyRecord::generate(Algorithm::EdDsa, 0).unwrap();
    let attacker_key = attacker.signing_key().unwrap();
    for param in ["jku", "x5u"] {
        // With our kid and a genuine signature: the parameter alone is refused.
        let mut header = header_of(&genuine.access);
        header[param] = json!(url);
        let token = sign_json(&server, &header, &claims);
        assert_refused(&server, &genuine, &token, "invalid_token", param).await;
        // With the attacker's kid and signature, as if their key set were at the URL.
        let header = json!({"alg": "EdDSA", "kid": attacker.kid, "typ": "at+jwt", param: url});
        let input = format!(
            "{}.{}",
            b64::encode(header.to_string().as_bytes()),
            b64::encode(claims.to_string().as_bytes())
        );
        let signature = attacker_key.sign(input.as_bytes()).unwrap();
        let token = format!("{input}.{}", b64::encode(&signature));
        assert_refused(
            &server,
            &genuine,
            &token,
            "invalid_token",
            &format!("{param} with the attacker's key"),
        )
        .await;
    }
    // Any connection the server made would be waiting in the listener's backlog by now.
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("the server connected to {url} from {peer}"),
        Err(e) => panic!("accept failed: {e}"),
    }
}

#[tokio::test]
async fn embedded_jwk_and_x5c_headers_are_refused() {
    // CVE-2018-0114 style: the token carries the key that "verifies" it.
    let (server, genuine) = jwt_server("EdDSA").await;
    let claims = claims_of(&genuine.access);
    let kid = header_of(&genuine.access)["kid"].clone();
    let attacker = KeyRecord::generate(Algorithm::EdDsa, 0).unwrap();
    let attacker_key = attacker.signing_key().unwrap();
    let mut attacker_jwk = attacker.public_jwk().unwrap();
    attacker_jwk["kid"] = kid.clone();
    for (param, value) in [
        ("jwk", attacker_jwk),
        (
            "x5c",
            json!(["MIIBszCCAVmgAwIBAgIUQm9ndXMgY2VydGlmaWNhdGU"]),
        ),
    ] {
        let header = json!({"alg": "EdDSA", "kid": kid, "typ": "at+jwt", param: value});
        let input = format!(
            "{}.{}",
            b64::encode(header.to_string().as_bytes()),
            b64::encode(claims.to_string().as_bytes())
        );
        let signature = attacker_key.sign(input.as_bytes()).unwrap();
        let token = format!("{input}.{}", b64::encode(&signature));
        assert_refused(&server, &genuine, &token, "invalid_token", param).await;
        // And with a genuine signature too: the parameter alone is enough to refuse.
        let token = sign_json(&server, &header, &claims);
        assert_refused(
            &server,
            &genuine,
            &token,
            "invalid_token",
            &format!("{param}, genuine signature"),
        )
        .await;
    }
}

#[tokio::test]
async fn crit_header_is_refused() {
    let (server, genuine) = jwt_server("EdDSA").await;
    let claims = claims_of(&genuine.access);
    for crit in [json!(["exp"]), json!([]), json!(["b64"]), json!("exp")] {
        let mut header = header_of(&genuine.access);
        header["crit"] = crit.clone();
        let token = sign_json(&server, &header, &claims);
        assert_refused(
            &server,
            &genuine,
            &token,
            "invalid_token",
            &crit.to_string(),
        )
        .await;
    }
}

#[tokio::test]
async fn unknown_header_parameters_are_refused() {
    let (server, genuine) = jwt_server("EdDSA").await;
    let claims = claims_of(&genuine.access);
    for (param, value) in [
        ("zip", json!("DEF")),
        ("b64", json!(false)),
        ("x5t", json!("AAAA")),
        ("x5t#S256", json!("AAAA")),
        ("JKU", json!("http://127.0.0.1:9/")),
        ("cty", json!("JWT")),
        ("enc", json!("A256GCM")),
    ] {
        let mut header = header_of(&genuine.access);
        header[param] = value;
        let token = sign_json(&server, &header, &claims);
        assert_refused(&server, &genuine, &token, "invalid_token", param).await;
    }
}

#[tokio::test]
async fn unknown_kid_is_refused() {
    let (server, genuine) = jwt_server("EdDSA").await;
    let claims = claims_of(&genuine.access);
    let mut header = header_of(&genuine.access);
    // A well-formed kid we never issued (it even makes the server re-read its keys once).
    header["kid"] = json!("AAAAAAAAAAAAAAAAAAAAAA");
    let token = sign_json(&server, &header, &claims);
    assert_refused(&server, &genuine, &token, "invalid_token", "unknown kid").await;
    // A token from another tessera deployment (another key set, same algorithm).
    let other = TestServer::start().await;
    let foreign = other.session("alice", Delivery::Bearer).await;
    assert_refused(
        &server,
        &genuine,
        &foreign.access,
        "invalid_token",
        "foreign",
    )
    .await;
    // No kid at all.
    header.as_object_mut().unwrap().remove("kid");
    let token = sign_json(&server, &header, &claims);
    assert_refused(&server, &genuine, &token, "invalid_token", "missing kid").await;
    // A kid of the wrong JSON type.
    header["kid"] = json!(7);
    let token = sign_json(&server, &header, &claims);
    assert_refused(&server, &genuine, &token, "invalid_token", "numeric kid").await;
}

#[tokio::test]
async fn path_like_kid_is_refused() {
    let (server, genuine) = jwt_server("EdDSA").await;
    let claims = claims_of(&genuine.access);
    let real_kid = header_of(&genuine.access)["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    for kid in [
        "../../../../etc/passwd".to_owned(),
        "/dev/null".to_owned(),
        format!("../{real_kid}"),
        format!("{real_kid}/"),
        format!("{real_kid}%00"),
        "..%2f..%2fkeys".to_owned(),
        "' OR '1'='1".to_owned(),
        "http://127.0.0.1:9/key".to_owned(),
        "C:\\keys\\current".to_owned(),
    ] {
        let mut header = header_of(&genuine.access);
        header["kid"] = json!(kid);
        let token = sign_json(&server, &header, &claims);
        assert_refused(&server, &genuine, &token, "invalid_token", &kid).await;
    }
}

#[tokio::test]
async fn oversized_kid_is_refused() {
    let (server, genuine) = jwt_server("EdDSA").await;
    let claims = claims_of(&genuine.access);
    for len in [65, 1000, 4000] {
        let mut header = header_of(&genuine.access);
        header["kid"] = json!("k".repeat(len));
        let token = sign_json(&server, &header, &claims);
        assert!(token.len() <= tessera_core::MAX_TOKEN_LEN, "{len}");
        assert_refused(
            &server,
            &genuine,
            &token,
            "invalid_token",
            &format!("{len}"),
        )
        .await;
    }
}

#[tokio::test]
async fn wrong_typ_is_refused() {
    let (server, genuine) = jwt_server("EdDSA").await;
    let claims = claims_of(&genuine.access);
    for typ in [
        json!("rt+jwt"),
        json!("refresh+jwt"),
        json!("JWT"),
        json!("jwt"),
        json!("AT+JWT"),
        json!("application/at+jwt"),
        json!("id_token"),
        json!(""),
        json!(1),
        json!(null),
    ] {
        let mut header = header_of(&genuine.access);
        header["typ"] = typ.clone();
        let token = sign_json(&server, &header, &claims);
        assert_refused(&server, &genuine, &token, "invalid_token", &typ.to_string()).await;
    }
    let mut header = header_of(&genuine.access);
    header.as_object_mut().unwrap().remove("typ");
    let token = sign_json(&server, &header, &claims);
    assert_refused(&server, &genuine, &token, "invalid_token", "no typ").await;
}

#[tokio::test]
async fn refresh_token_presented_as_access_token_is_refused() {
    let (server, genuine) = jwt_server("EdDSA").await;
    let refresh = genuine.refresh.clone().unwrap();
    assert_refused(
        &server,
        &genuine,
        &refresh,
        "invalid_token",
        "refresh as access",
    )
    .await;
    let response = server
        .client
        .get(server.url("/v1/session"))
        .header("cookie", format!("__Host-tessera={refresh}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(problem_code(response).await, "invalid_token");
}

#[tokio::test]
async fn access_token_presented_as_refresh_token_is_refused() {
    for format in [TokenFormat::Jwt, TokenFormat::Opaque] {
        let server = TestServer::start_with(|c| c.bearer_format = format).await;
        let genuine = server.session("alice", Delivery::Bearer).await;
        let response = server
            .client
            .post(server.url("/v1/refresh"))
            .json(&json!({ "refresh_token": genuine.access }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{format:?}");
        assert_eq!(problem_code(response).await, "invalid_token");
        assert_healthy(&server, &genuine).await;
    }
}

#[tokio::test]
async fn jws_with_wrong_segment_count_is_refused() {
    let (server, genuine) = jwt_server("EdDSA").await;
    let t = genuine.access.clone();
    let (head, sig) = t.rsplit_once('.').unwrap();
    for token in [
        head.to_owned(),
        format!("{t}.{sig}"),
        format!("{head}.{sig}.{sig}.{sig}"),
        format!("{t}."),
        format!(".{t}"),
        "..".to_owned(),
        "....".to_owned(),
    ] {
        assert_refused(&server, &genuine, &token, "invalid_token", &token).await;
    }
}

#[tokio::test]
async fn every_token_of_the_shared_corpus_is_refused() {
    // The cases tessera-token's tests refuse (crates/tessera-token/tests/vectors/refused.json),
    // built from this server's genuine token and signed with its real key.
    for alg in ["EdDSA", "ES256", "HS256"] {
        let (server, genuine) = jwt_server(alg).await;
        let sign = |input: &[u8]| {
            server
                .service
                .key_ring()
                .keys()
                .set
                .current()
                .sign(input)
                .unwrap()
        };
        let corpus = corpus::Genuine {
            header: header_of(&genuine.access),
            claims: claims_of(&genuine.access),
            now: server.service.now(),
            sign: &sign,
        };
        let control = corpus.token(&serde_json::Map::new());
        assert_accepted(
            &server,
            &control,
            &format!("{alg}: re-signed genuine token"),
        )
        .await;
        for case in corpus::cases() {
            if !corpus.applies(&case) {
                continue;
            }
            let what = format!("{alg}: {}", case["name"].as_str().unwrap());
            let code = case["code"].as_str().unwrap();
            assert_refused(&server, &genuine, &corpus.token(&case), code, &what).await;
        }
    }
}

// ------------------------------------------------------------------ claim attacks

#[tokio::test]
async fn missing_exp_nbf_or_iat_is_refused() {
    let (server, genuine) = jwt_server("EdDSA").await;
    let header = header_of(&genuine.access);
    assert_accepted(
        &server,
        &sign_json(&server, &header, &claims_of(&genuine.access)),
        "re-signed genuine claims",
    )
    .await;
    for claim in ["exp", "nbf", "iat", "iss", "aud", "sub", "sid", "jti"] {
        let mut claims = claims_of(&genuine.access);
        claims.as_object_mut().unwrap().remove(claim);
        let token = sign_json(&server, &header, &claims);
        assert_refused(&server, &genuine, &token, "invalid_token", claim).await;
    }
}

#[tokio::test]
async fn wrongly_typed_exp_nbf_or_iat_is_refused() {
    let (server, genuine) = jwt_server("EdDSA").await;
    let header = header_of(&genuine.access);
    for claim in ["exp", "nbf", "iat"] {
        let original = claims_of(&genuine.access)[claim].as_i64().unwrap();
        for value in [
            json!(original.to_string()),
            json!(original as f64 + 0.5),
            json!(1.0e10),
            json!(true),
            json!(null),
            json!([original]),
            json!({ "value": original }),
            json!(u64::MAX),
        ] {
            let mut claims = claims_of(&genuine.access);
            claims[claim] = value.clone();
            let token = sign_json(&server, &header, &claims);
            assert_refused(
                &server,
                &genuine,
                &token,
                "invalid_token",
                &format!("{claim} = {value}"),
            )
            .await;
        }
    }
}

#[tokio::test]
async fn wrong_issuer_is_refused() {
    let (server, genuine) = jwt_server("EdDSA").await;
    let header = header_of(&genuine.access);
    for iss in [
        json!("https://evil.example"),
        json!("Tessera"),
        json!(""),
        json!(["tessera"]),
    ] {
        let mut claims = claims_of(&genuine.access);
        claims["iss"] = iss.clone();
        let token = sign_json(&server, &header, &claims);
        assert_refused(&server, &genuine, &token, "invalid_token", &iss.to_string()).await;
    }
}

#[tokio::test]
async fn wrong_audience_is_refused() {
    let (server, genuine) = jwt_server("EdDSA").await;
    let header = header_of(&genuine.access);
    for aud in [
        json!("another-service"),
        json!("TESSERA"),
        json!(""),
        json!(["tessera"]),
        json!(["another-service", "tessera"]),
    ] {
        let mut claims = claims_of(&genuine.access);
        claims["aud"] = aud.clone();
        let token = sign_json(&server, &header, &claims);
        assert_refused(&server, &genuine, &token, "invalid_token", &aud.to_string()).await;
    }
}

#[tokio::test]
async fn expired_token_is_refused() {
    let (server, _) = jwt_server("EdDSA").await;
    let old = server.session("alice", Delivery::Bearer).await;
    // The access lifetime (600 s) and the leeway (30 s) have passed.
    server.advance(600 + 30);
    let genuine = server.session("alice", Delivery::Bearer).await;
    assert_refused(&server, &genuine, &old.access, "token_expired", "expired").await;
    // A forged exp in the past, with a genuine signature and a live session.
    let mut claims = claims_of(&genuine.access);
    claims["exp"] = json!(server.service.now() - 31);
    let token = sign_json(&server, &header_of(&genuine.access), &claims);
    assert_refused(
        &server,
        &genuine,
        &token,
        "token_expired",
        "exp in the past",
    )
    .await;
}

#[tokio::test]
async fn not_yet_valid_token_is_refused() {
    let (server, genuine) = jwt_server("EdDSA").await;
    let mut claims = claims_of(&genuine.access);
    claims["nbf"] = json!(server.service.now() + 31);
    let token = sign_json(&server, &header_of(&genuine.access), &claims);
    assert_refused(
        &server,
        &genuine,
        &token,
        "invalid_token",
        "nbf in the future",
    )
    .await;
}

#[tokio::test]
async fn duplicate_header_member_is_refused() {
    let (server, genuine) = jwt_server("EdDSA").await;
    let claims = claims_of(&genuine.access).to_string();
    let header = header_of(&genuine.access);
    let kid = header["kid"].as_str().unwrap();
    for text in [
        format!(r#"{{"alg":"EdDSA","alg":"HS256","kid":"{kid}","typ":"at+jwt"}}"#),
        format!(r#"{{"alg":"EdDSA","kid":"{kid}","kid":"{kid}","typ":"at+jwt"}}"#),
        format!(r#"{{"alg":"EdDSA","kid":"{kid}","typ":"rt+jwt","typ":"at+jwt"}}"#),
    ] {
        let token = sign_raw(&server, text.as_bytes(), claims.as_bytes());
        assert_refused(&server, &genuine, &token, "invalid_token", &text).await;
    }
}

#[tokio::test]
async fn duplicate_claim_is_refused() {
    // Parsers that keep the last duplicate let an attacker who controls part of the claims
    // override earlier ones; tessera refuses the token instead.
    let (server, genuine) = jwt_server("EdDSA").await;
    let header = header_of(&genuine.access).to_string();
    let claims = claims_of(&genuine.access).to_string();
    for (claim, extra) in [
        ("sub", r#""sub":"someone-else""#),
        ("roles", r#""roles":["admin"]"#),
        ("exp", r#""exp":4102444800"#),
        ("sid", r#""sid":"another-session""#),
    ] {
        let text = claims.replacen('{', &format!("{{{extra},"), 1);
        assert!(text.matches(&format!("\"{claim}\"")).count() == 2);
        let token = sign_raw(&server, header.as_bytes(), text.as_bytes());
        assert_refused(&server, &genuine, &token, "invalid_token", claim).await;
    }
}

#[tokio::test]
async fn non_object_or_non_utf8_header_is_refused() {
    let (server, genuine) = jwt_server("EdDSA").await;
    let claims = claims_of(&genuine.access).to_string();
    let header = header_of(&genuine.access);
    let kid = header["kid"].as_str().unwrap();
    let mut latin1 = header.to_string().into_bytes();
    latin1.insert(1, 0xe9);
    for text in [
        // The same fields as a JSON array, which a lax struct parser accepts.
        format!(r#"["EdDSA","{kid}","at+jwt",null,null,null,null,null,null,null]"#).into_bytes(),
        br#""EdDSA""#.to_vec(),
        b"null".to_vec(),
        b"42".to_vec(),
        latin1,
        format!("{header} trailing").into_bytes(),
        format!("\u{feff}{header}").into_bytes(),
    ] {
        let token = sign_raw(&server, &text, claims.as_bytes());
        assert_refused(
            &server,
            &genuine,
            &token,
            "invalid_token",
            &String::from_utf8_lossy(&text),
        )
        .await;
    }
}

#[tokio::test]
async fn non_object_or_non_utf8_payload_is_refused() {
    let (server, genuine) = jwt_server("EdDSA").await;
    let header = header_of(&genuine.access).to_string();
    let claims = claims_of(&genuine.access);
    // The claims' values in the order the claims struct declares them, as a lax struct parser
    // would take them from an array.
    let order = [
        "iss", "aud", "sub", "sid", "name", "roles", "perms", "iat", "nbf", "exp", "jti",
    ];
    let values: Vec<Value> = order.iter().map(|k| claims[*k].clone()).collect();
    let mut latin1 = claims.to_string().into_bytes();
    latin1.insert(1, 0xe9);
    for text in [
        Value::Array(values).to_string().into_bytes(),
        b"\"claims\"".to_vec(),
        b"[]".to_vec(),
        latin1,
        format!("{claims}{claims}").into_bytes(),
    ] {
        let token = sign_raw(&server, header.as_bytes(), &text);
        assert_refused(
            &server,
            &genuine,
            &token,
            "invalid_token",
            &String::from_utf8_lossy(&text),
        )
        .await;
    }
}

// ------------------------------------------------------------------ signature attacks

#[tokio::test]
async fn ecdsa_zero_signature_is_refused() {
    // CVE-2022-21449 ("psychic signatures"): r = s = 0 verified anything in some libraries.
    let (server, genuine) = jwt_server("ES256").await;
    let (header, payload) = (segment(&genuine.access, 0), segment(&genuine.access, 1));
    let signature = segment(&genuine.access, 2);
    let (r, s) = signature.split_at(32);
    for (name, sig) in [
        ("r = s = 0", [[0u8; 32], [0u8; 32]].concat()),
        ("r = 0", [&[0u8; 32][..], s].concat()),
        ("s = 0", [r, &[0u8; 32][..]].concat()),
    ] {
        let token = assemble(&header, &payload, &sig);
        assert_refused(&server, &genuine, &token, "invalid_token", name).await;
    }
}

#[tokio::test]
async fn ecdsa_out_of_range_signature_is_refused() {
    let (server, genuine) = jwt_server("ES256").await;
    let (header, payload) = (segment(&genuine.access, 0), segment(&genuine.access, 1));
    let signature = segment(&genuine.access, 2);
    let (r, s) = signature.split_at(32);
    let n = hex(P256_N);
    let p = hex(P256_P);
    let ones = [0xffu8; 32];
    for (name, sig) in [
        ("r = n", [&n[..], s].concat()),
        ("s = n", [r, &n[..]].concat()),
        ("r = p", [&p[..], s].concat()),
        ("s = p", [r, &p[..]].concat()),
        ("r = 2^256 - 1", [&ones[..], s].concat()),
        ("s = 2^256 - 1", [r, &ones[..]].concat()),
        ("r = s = n", [&n[..], &n[..]].concat()),
    ] {
        let token = assemble(&header, &payload, &sig);
        assert_refused(&server, &genuine, &token, "invalid_token", name).await;
    }
}

#[tokio::test]
async fn ecdsa_signature_of_wrong_length_or_der_encoding_is_refused() {
    let (server, genuine) = jwt_server("ES256").await;
    let (header, payload) = (segment(&genuine.access, 0), segment(&genuine.access, 1));
    let signature = segment(&genuine.access, 2);
    let (r, s) = signature.split_at(32);
    // The same (r, s) as an ASN.1 DER SEQUENCE of two INTEGERs (what X.509 uses, not JOSE).
    let integer = |v: &[u8]| {
        let mut v = v.to_vec();
        while v.len() > 1 && v[0] == 0 && v[1] < 0x80 {
            v.remove(0);
        }
        if v[0] >= 0x80 {
            v.insert(0, 0);
        }
        [vec![0x02, v.len() as u8], v].concat()
    };
    let body = [integer(r), integer(s)].concat();
    let der = [vec![0x30, body.len() as u8], body].concat();
    for (name, sig) in [
        ("DER", der),
        ("63 bytes", signature[..63].to_vec()),
        ("65 bytes", [&signature[..], &[0u8][..]].concat()),
        ("r only", r.to_vec()),
        ("empty", Vec::new()),
    ] {
        let token = assemble(&header, &payload, &sig);
        assert_refused(&server, &genuine, &token, "invalid_token", name).await;
    }
}

#[tokio::test]
async fn ed25519_non_canonical_s_is_refused() {
    // S and S + L are the same scalar; RFC 8032 requires S < L, so only one spelling is valid.
    let (server, genuine) = jwt_server("EdDSA").await;
    let (header, payload) = (segment(&genuine.access, 0), segment(&genuine.access, 1));
    let signature = segment(&genuine.access, 2);
    let (r, s) = signature.split_at(32);
    let mut l = hex(ED25519_L);
    l.reverse(); // little-endian, as in the signature
    let s_plus_l = add_le(s, &l);
    let mut high_bit = s.to_vec();
    high_bit[31] |= 0x80;
    for (name, sig) in [
        ("S + L", [r, &s_plus_l[..]].concat()),
        ("S with its top bit set", [r, &high_bit[..]].concat()),
        ("S = L", [r, &l[..]].concat()),
    ] {
        let token = assemble(&header, &payload, &sig);
        assert_refused(&server, &genuine, &token, "invalid_token", name).await;
    }
}

#[tokio::test]
async fn ecdsa_malleated_signature_cannot_escape_revocation() {
    // ECDSA signatures are malleable: (r, n - s) verifies whenever (r, s) does, so the token
    // bytes change while the claims do not. Revocation is keyed on the session id, never on
    // the token bytes, so the twin dies with the original.
    let (server, genuine) = jwt_server("ES256").await;
    let (header, payload) = (segment(&genuine.access, 0), segment(&genuine.access, 1));
    let signature = segment(&genuine.access, 2);
    let (r, s) = signature.split_at(32);
    let twin = assemble(
        &header,
        &payload,
        &[r, &sub_be(&hex(P256_N), s)[..]].concat(),
    );
    assert_ne!(twin, genuine.access);
    assert_accepted(&server, &twin, "the malleated twin verifies before logout").await;

    let logout = server
        .send(reqwest::Method::POST, "/v1/logout", &genuine)
        .await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let response = present(&server, &twin).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(problem_code(response).await, "token_revoked");
    let other = server.session("alice", Delivery::Bearer).await;
    assert_healthy(&server, &other).await;
}

#[tokio::test]
async fn single_bit_flips_of_a_valid_token_are_refused() {
    for alg in ["EdDSA", "ES256", "HS256"] {
        let (server, genuine) = jwt_server(alg).await;
        let bytes = genuine.access.as_bytes();
        let mut tried = 0;
        for i in 0..bytes.len() {
            // One bit per byte, cycling through the bit positions.
            let mut flipped = bytes.to_vec();
            flipped[i] ^= 1 << (i % 8);
            let Ok(text) = String::from_utf8(flipped) else {
                continue;
            };
            if reqwest::header::HeaderValue::from_str(&format!("Bearer {text}")).is_err() {
                continue; // not sendable in a header at all
            }
            let response = present(&server, &text).await;
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{alg}: byte {i} flipped"
            );
            tried += 1;
        }
        assert!(tried > bytes.len() / 2, "{alg}: {tried}");
        assert_healthy(&server, &genuine).await;
    }
}

// ------------------------------------------------------------------ encoding attacks

#[tokio::test]
async fn non_canonical_base64url_is_refused() {
    let (server, genuine) = jwt_server("EdDSA").await;
    let t = genuine.access.clone();
    let segments: Vec<&str> = t.split('.').collect();
    let join = |i: usize, replacement: &str| {
        let mut parts = segments.clone();
        parts[i] = replacement;
        parts.join(".")
    };
    let std_engine = base64::engine::general_purpose::STANDARD;
    for (i, seg) in segments.iter().copied().enumerate() {
        let bytes = b64::decode(seg).unwrap();
        let mut cases = vec![
            (
                "padding",
                std_engine
                    .encode(&bytes)
                    .replace('+', "-")
                    .replace('/', "_"),
            ),
            ("space inside", format!("{} {}", &seg[..4], &seg[4..])),
            ("tab inside", format!("{}\t{}", &seg[..4], &seg[4..])),
            ("extra character", format!("{seg}A")),
        ];
        if !cases[0].1.ends_with('=') {
            cases[0].1.push_str("==");
        }
        // The standard alphabet spelling of the same bytes, when it differs.
        let standard = std_engine.encode(&bytes).trim_end_matches('=').to_owned();
        if standard != seg {
            cases.push(("standard alphabet", standard));
        }
        // Non-zero unused trailing bits: the same bytes to a lenient decoder.
        if !seg.len().is_multiple_of(4) {
            let (head, last) = seg.split_at(seg.len() - 1);
            cases.push((
                "trailing bits",
                format!("{head}{}", next_base64url_char(last)),
            ));
        }
        for (name, replacement) in cases {
            let token = join(i, &replacement);
            assert_refused(
                &server,
                &genuine,
                &token,
                "invalid_token",
                &format!("segment {i}: {name}"),
            )
            .await;
        }
    }
}

#[tokio::test]
async fn oversized_token_is_refused_before_decoding() {
    let (server, genuine) = jwt_server("EdDSA").await;
    let header = header_of(&genuine.access);
    let limit = tessera_core::MAX_TOKEN_LEN;
    // A genuinely signed token of exactly the limit is accepted; one byte more is not.
    let sized = |extra: usize, jti_pad: usize| {
        let mut claims = claims_of(&genuine.access);
        claims["name"] = json!("a".repeat(extra));
        claims["jti"] = json!(format!(
            "{}{}",
            claims["jti"].as_str().unwrap(),
            "j".repeat(jti_pad)
        ));
        sign_json(&server, &header, &claims)
    };
    let mut at_limit = None;
    let mut over_limit = None;
    for jti_pad in 0..3 {
        for extra in (limit * 3 / 4 - 600)..(limit * 3 / 4) {
            let token = sized(extra, jti_pad);
            if token.len() == limit && at_limit.is_none() {
                at_limit = Some(token);
            } else if token.len() == limit + 1 && over_limit.is_none() {
                over_limit = Some(token);
            }
        }
    }
    let at_limit = at_limit.expect("a token of exactly 8 KiB");
    let over_limit = over_limit.expect("a token of 8 KiB + 1");
    assert_accepted(&server, &at_limit, "exactly 8 KiB").await;
    let response = present(&server, &over_limit).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "invalid_token");
    assert_eq!(body["detail"], "token is too large");
    // Far larger, and not even base64: refused for its size, not its content.
    let response = present(&server, &"%".repeat(64 * 1024)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["detail"], "token is too large");
    assert_healthy(&server, &genuine).await;
}

// ------------------------------------------------------------------ opaque tokens

/// The store operations a presented token can cause.
const LOOKUPS: [&str; 4] = [
    "session_by_access_hash",
    "session_by_id",
    "session_by_refresh_hash",
    "rotate_refresh",
];

async fn counting_server(format: TokenFormat) -> (TestServer, Arc<Layered<Operations>>) {
    TestServer::counting(|c| {
        c.cookie_format = format;
        c.bearer_format = format;
    })
    .await
}

#[tokio::test]
async fn malformed_opaque_tokens_are_refused_before_the_store_is_asked() {
    let (server, store) = counting_server(TokenFormat::Opaque).await;
    let genuine = server.session("alice", Delivery::Cookie).await;
    let body = &genuine.access["tsr_".len()..];
    let malformed = [
        format!("tsx_{body}"),
        format!("TSR_{body}"),
        format!("tsr-{body}"),
        format!("tsr_{}", &body[1..]),
        format!("tsr_{body}A"),
        format!("tsr_{}+", &body[1..]),
        format!("tsr_{}/", &body[1..]),
        format!("tsr_{}=", &body[1..]),
        format!("tsr_{} ", &body[1..]),
        format!("tsr_{}%", &body[1..]),
        // Non-zero trailing bits: 32 bytes leave 2 unused bits in the last character.
        format!("tsr_{}{}", &body[..42], next_base64url_char(&body[42..])),
    ];
    let before = store.layer().of(&LOOKUPS);
    for token in &malformed {
        for via in ["cookie", "bearer"] {
            let request = server.client.get(server.url("/v1/session"));
            let request = if via == "cookie" {
                request.header("cookie", format!("__Host-tessera={token}"))
            } else {
                request.bearer_auth(token)
            };
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{via} {token}");
            assert_eq!(problem_code(response).await, "invalid_token", "{token}");
        }
    }
    assert_eq!(
        store.layer().of(&LOOKUPS),
        before,
        "no malformed token reached the store"
    );
    // A well-formed token we never issued does cost a lookup, and is unknown.
    let unknown = format!("tsr_{}", b64::encode(&[7u8; 32]));
    let response = server
        .client
        .get(server.url("/v1/session"))
        .bearer_auth(&unknown)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(problem_code(response).await, "invalid_token");
    assert_eq!(store.layer().of(&LOOKUPS), before + 1);
    assert_healthy(&server, &genuine).await;
}

#[tokio::test]
async fn malformed_refresh_tokens_are_refused_before_the_store_is_asked() {
    let (server, store) = counting_server(TokenFormat::Jwt).await;
    let genuine = server.session("alice", Delivery::Bearer).await;
    let refresh = genuine.refresh.clone().unwrap();
    let body = &refresh["tsrf_".len()..];
    let before = store.layer().of(&LOOKUPS);
    for token in [
        format!("tsr_{body}"),
        format!("tsrf_{}", &body[1..]),
        format!("tsrf_{body}="),
        format!("tsrf_{}+", &body[1..]),
        "x".repeat(9 * 1024),
        String::new(),
    ] {
        let response = server
            .client
            .post(server.url("/v1/refresh"))
            .json(&json!({ "refresh_token": token }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{token:.40}");
        assert_eq!(problem_code(response).await, "invalid_token");
    }
    assert_eq!(store.layer().of(&LOOKUPS), before);
    assert_healthy(&server, &genuine).await;
}

// ------------------------------------------------------------------ presentation

#[tokio::test]
async fn cookie_name_variants_are_not_the_session_cookie() {
    let server = TestServer::start().await;
    let genuine = server.session("alice", Delivery::Cookie).await;
    let token = &genuine.access;
    for cookie in [
        format!("__host-tessera={token}"),
        format!("__Host-Tessera={token}"),
        format!("__Secure-tessera={token}"),
        format!("tessera={token}"),
        format!("__Host-tessera ={token}"),
        format!("x__Host-tessera={token}"),
    ] {
        let response = server
            .client
            .get(server.url("/v1/session"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{cookie:.30}");
        assert_eq!(
            problem_code(response).await,
            "unauthenticated",
            "{cookie:.30}"
        );
    }
    assert_healthy(&server, &genuine).await;
}

#[tokio::test]
async fn token_in_url_query_is_ignored() {
    for format in [TokenFormat::Opaque, TokenFormat::Jwt] {
        let server = TestServer::start_with(|c| c.bearer_format = format).await;
        let genuine = server.session("alice", Delivery::Bearer).await;
        for name in ["access_token", "token", "__Host-tessera"] {
            let response = server
                .client
                .get(server.url(&format!("/v1/session?{name}={}", genuine.access)))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name}");
            assert_eq!(problem_code(response).await, "unauthenticated");
        }
        assert_healthy(&server, &genuine).await;
    }
}

#[tokio::test]
async fn forged_jwt_in_a_cookie_is_refused_like_a_bearer_token() {
    let server = TestServer::start_with(|c| c.cookie_format = TokenFormat::Jwt).await;
    let genuine = server.session("alice", Delivery::Cookie).await;
    let claims = claims_of(&genuine.access);
    let mut header = header_of(&genuine.access);
    header["alg"] = json!("none");
    let unsigned = assemble(
        header.to_string().as_bytes(),
        claims.to_string().as_bytes(),
        b"",
    );
    let mut header = header_of(&genuine.access);
    header["jku"] = json!("http://127.0.0.1:9/");
    let with_jku = sign_json(&server, &header, &claims);
    for token in [unsigned, with_jku] {
        let response = server
            .client
            .get(server.url("/v1/session"))
            .header("cookie", format!("__Host-tessera={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(problem_code(response).await, "invalid_token");
    }
    assert_healthy(&server, &genuine).await;
}
