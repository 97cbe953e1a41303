//! An independent verifier: Python's joserfc (a JOSE implementation tessera did not write)
//! verifies tessera's EdDSA and ES256 access tokens through `/.well-known/jwks.json`, and
//! refuses them after a one-bit change.
//!
//! Needs `python3` with joserfc (`.ci/run` installs the pinned version). If either is missing
//! the test fails: it never skips. `TESSERA_TEST_PYTHON` names another interpreter.

use std::process::Stdio;

use serde_json::Value;
use tessera_core::b64;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::support::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/verify_jwts.py");

/// The token with one bit of one decoded segment flipped, re-encoded canonically, so the
/// other verifier sees well-formed base64url and must catch the change cryptographically.
fn flip(token: &str, segment: usize, byte: usize) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut bytes = b64::decode(&parts[segment]).unwrap();
    let i = byte % bytes.len();
    bytes[i] ^= 0x01;
    parts[segment] = b64::encode(&bytes);
    parts.join(".")
}

async fn verify_with_joserfc(server: &TestServer, tokens: &[String]) -> Value {
    let python = std::env::var("TESSERA_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = Command::new(&python)
        .arg(SCRIPT)
        .arg(server.url("/.well-known/jwks.json"))
        .args(["tessera", "tessera"])
        .arg(server.service.now().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python} (needed for this test): {e}"));
    let mut stdin = child.stdin.take().unwrap();
    // A verifier that died at start-up closes its stdin; its exit status says why, below.
    let _ = stdin
        .write_all(serde_json::to_string(tokens).unwrap().as_bytes())
        .await;
    drop(stdin);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the verifier finished in time")
        .unwrap();
    assert!(
        out.status.success(),
        "{python} {SCRIPT} failed (is joserfc installed? `pip install joserfc`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn joserfc_verifies_our_eddsa_and_es256_tokens_through_the_jwks() {
    for alg in ["EdDSA", "ES256"] {
        let server = TestServer::start_with(|c| c.jwt_algorithm = alg.parse().unwrap()).await;
        let alice = server.session("alice", Delivery::Bearer).await;
        let admin = server.session("admin", Delivery::Bearer).await;
        let genuine = [alice.access.clone(), admin.access.clone()];
        let tampered: Vec<String> = vec![
            flip(&alice.access, 2, 10),
            flip(&alice.access, 2, 40),
            flip(&alice.access, 1, 3),
            flip(&alice.access, 0, 5),
        ];
        for t in &tampered {
            assert_ne!(t, &alice.access);
        }
        let tokens: Vec<String> = genuine.iter().chain(&tampered).cloned().collect();
        let report = verify_with_joserfc(&server, &tokens).await;
        let results = report["results"].as_array().unwrap();
        assert_eq!(results.len(), tokens.len());
        for (i, result) in results.iter().enumerate() {
            if i < genuine.len() {
                assert_eq!(result["valid"], true, "{alg}: genuine token {i}: {result}");
                assert_eq!(result["alg"], alg);
            } else {
                assert_eq!(
                    result["valid"], false,
                    "{alg}: tampered token {i}: {result}"
                );
            }
        }
        assert_eq!(
            results[0]["sub"],
            server.service.user("alice").await.unwrap().id.as_str(),
            "joserfc read the claims tessera signed"
        );
        // And tessera agrees with the other verifier on every one of them.
        for (i, token) in tokens.iter().enumerate() {
            let response = server
                .client
                .get(server.url("/v1/session"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status().is_success(),
                i < genuine.len(),
                "{alg} {i}"
            );
        }
        eprintln!("joserfc {} agreed on {alg}", report["joserfc"]);
    }
}

#[tokio::test]
async fn tessera_token_verifies_our_tokens_through_the_published_jwks() {
    // What a separately deployed Rust service does: fetch the JWKS, build the verifying keys
    // with tessera-token (re-exported by tessera-core), verify locally.
    use tessera_core::claims::{self, ClaimRules};
    use tessera_core::keys::VerifyingKeys;
    for alg in ["EdDSA", "ES256"] {
        let server = TestServer::start_with(|c| c.jwt_algorithm = alg.parse().unwrap()).await;
        let alice = server.session("alice", Delivery::Bearer).await;
        let jwks = server
            .client
            .get(server.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let keys = VerifyingKeys::from_jwks(&jwks).unwrap();
        let rules = ClaimRules {
            issuer: "tessera".into(),
            audience: "tessera".into(),
            leeway: 30,
        };
        let now = server.service.now();
        let verified = claims::verify(&alice.access, &keys, &rules, now).unwrap();
        assert_eq!(
            verified.sub,
            server.service.user("alice").await.unwrap().id.as_str(),
            "{alg}"
        );
        for i in [3, 40] {
            assert!(claims::verify(&flip(&alice.access, 1, i), &keys, &rules, now).is_err());
            assert!(claims::verify(&flip(&alice.access, 2, i), &keys, &rules, now).is_err());
        }
    }
}
