//! Independent verifiers: JOSE implementations tessera did not write verify tessera's EdDSA
//! and ES256 access tokens through `/.well-known/jwks.json`.
//!
//! - Python's joserfc (`tests/python/verify_jwts.py`), and a one-bit change is refused.
//! - The snippets docs/api-backends.md shows, run as they are shown: PyJWT
//!   (`tests/interop/verify_pyjwt.py`) and Node's `jose` (`tests/interop/verify_jose.mjs`).
//!   Each must accept genuine tokens and refuse tampered ones, a wrong `typ`, an expired token
//!   and a wrong `aud`, each for that reason (`docs::the_interop_snippets_are_the_tested_files`
//!   keeps the document's copies equal to these files).
//!
//! Needs `python3` with joserfc and PyJWT (with cryptography), and `node` with `jose` in
//! /opt/tessera-test-tools/node (`.ci/run` installs the pinned versions). If any is missing
//! the test that needs it fails: none skips. `TESSERA_TEST_PYTHON`, `TESSERA_TEST_NODE` and
//! `TESSERA_TEST_NODE_MODULES` (the directory holding `jose`) name other ones.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tessera_core::b64;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::support::*;

const TESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests");
const JOSERFC_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/verify_jwts.py");
/// Where `.ci/run` installs npm's `jose`.
const NODE_MODULES: &str = "/opt/tessera-test-tools/node/node_modules";

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

fn python() -> String {
    std::env::var("TESSERA_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs `command` with `tokens` as a JSON list on its stdin and returns the JSON object it
/// prints; fails the test, saying it needs `needs`, when the command cannot run or fails.
async fn run_verifier(mut command: Command, tokens: &[String], needs: &str) -> Value {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?} (this test needs {needs}): {e}"));
    let mut stdin = child.stdin.take().unwrap();
    // A verifier that died at start-up closes its stdin; its exit status says why, below.
    let _ = stdin
        .write_all(serde_json::to_string(tokens).unwrap().as_bytes())
        .await;
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the verifier finished in time")
        .unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed (this test needs {needs}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn verify_with_joserfc(server: &TestServer, tokens: &[String]) -> Value {
    let mut command = Command::new(python());
    command
        .arg(JOSERFC_SCRIPT)
        .arg(server.url("/.well-known/jwks.json"))
        .args(["tessera", "tessera"])
        .arg(server.service.now().to_string());
    run_verifier(command, tokens, "joserfc: `pip install joserfc`").await
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

// ------------------------------------------------- the documented PyJWT and jose snippets

/// Why a snippet must refuse a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// One bit changed: the signature no longer matches.
    Tampered,
    /// Signed with tessera's key, but `typ` is `JWT`.
    WrongTyp,
    /// Genuine, and expired an hour before the snippet runs.
    Expired,
    /// Signed with tessera's key, but for another audience.
    WrongAudience,
}

/// A token for a snippet, and whether it must be refused.
struct Case {
    what: &'static str,
    token: String,
    refusal: Option<Refusal>,
}

/// A server signing with `alg` whose clock is the real one (the snippets read the system
/// clock, as a service does), and the tokens each snippet must judge.
async fn snippet_cases(alg: &str) -> (TestServer, Vec<Case>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let now = i64::try_from(now).unwrap();
    // An hour behind first, to issue a token that has expired by now.
    let server = TestServer::start_custom(
        |c| c.jwt_algorithm = alg.parse().unwrap(),
        now - 3600,
        |store| Arc::new(store),
    )
    .await;
    let expired = server.session("alice", Delivery::Bearer).await.access;
    server.advance(3600);
    let alice = server.session("alice", Delivery::Bearer).await.access;
    let admin = server.session("admin", Delivery::Bearer).await.access;
    let (header, claims) = (header_of(&alice), claims_of(&alice));
    let mut wrong_typ = header.clone();
    wrong_typ["typ"] = json!("JWT");
    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = json!("another-service");
    let case = |what, token, refusal| Case {
        what,
        token,
        refusal,
    };
    let cases = vec![
        case("alice's token", alice.clone(), None),
        case("admin's token", admin, None),
        // The control of the two below: re-signing as the tests do changes nothing by itself.
        case(
            "alice's claims re-signed",
            sign_json(&server, &header, &claims),
            None,
        ),
        case(
            "signature bit 10",
            flip(&alice, 2, 10),
            Some(Refusal::Tampered),
        ),
        case(
            "signature bit 40",
            flip(&alice, 2, 40),
            Some(Refusal::Tampered),
        ),
        case("claims bit 3", flip(&alice, 1, 3), Some(Refusal::Tampered)),
        case(
            "typ JWT",
            sign_json(&server, &wrong_typ, &claims),
            Some(Refusal::WrongTyp),
        ),
        case("expired an hour ago", expired, Some(Refusal::Expired)),
        case(
            "aud another-service",
            sign_json(&server, &header, &wrong_aud),
            Some(Refusal::WrongAudience),
        ),
    ];
    (server, cases)
}

/// The snippet's environment: the test server as `TESSERA_URL`, and its issuer and audience.
fn snippet_env(command: &mut Command, server: &TestServer) {
    command
        .env("TESSERA_URL", &server.base)
        .env("TESSERA_ISSUER", "tessera")
        .env("TESSERA_AUDIENCE", "tessera");
}

/// Runs a snippet's driver on every case for EdDSA and ES256 and checks each verdict, and
/// each refusal's reason: `reason` gives the words the verifier's error must contain.
async fn check_snippet(
    name: &str,
    run: impl AsyncFn(&TestServer, &[String]) -> Value,
    reason: impl Fn(Refusal) -> &'static str,
) {
    for alg in ["EdDSA", "ES256"] {
        let (server, cases) = snippet_cases(alg).await;
        let tokens: Vec<String> = cases.iter().map(|c| c.token.clone()).collect();
        let report = run(&server, &tokens).await;
        let results = report["results"].as_array().unwrap();
        assert_eq!(results.len(), cases.len(), "{report}");
        for (case, result) in cases.iter().zip(results) {
            let what = format!("{name}, {alg}, {}: {result}", case.what);
            assert_eq!(result["valid"], case.refusal.is_none(), "{what}");
            if let Some(words) = case.refusal.map(&reason) {
                let error = result["error"].as_str().unwrap();
                assert!(error.contains(words), "{what}: expected {words:?}");
            }
        }
        assert_eq!(
            results[0]["sub"],
            server.service.user("alice").await.unwrap().id.as_str(),
            "{name} read the claims tessera signed"
        );
        // tessera itself agrees with the snippet on every token.
        for case in &cases {
            let response = server
                .client
                .get(server.url("/v1/session"))
                .bearer_auth(&case.token)
                .send()
                .await
                .unwrap();
            let accepted = response.status().is_success();
            assert_eq!(
                accepted,
                case.refusal.is_none(),
                "tessera, {alg}: {}",
                case.what
            );
        }
        eprintln!("{name} {} agreed on {alg}", report["version"]);
    }
}

#[tokio::test]
async fn the_documented_pyjwt_snippet_accepts_our_tokens_and_refuses_bad_ones() {
    let run = async |server: &TestServer, tokens: &[String]| {
        let mut command = Command::new(python());
        command
            .arg(format!("{TESTS}/interop/run_pyjwt.py"))
            // No __pycache__ next to the snippet in the source tree.
            .env("PYTHONDONTWRITEBYTECODE", "1");
        snippet_env(&mut command, server);
        let needs = "PyJWT with cryptography: `pip install PyJWT cryptography`";
        run_verifier(command, tokens, needs).await
    };
    check_snippet("PyJWT", run, |refusal| match refusal {
        Refusal::Tampered => "InvalidSignatureError",
        Refusal::WrongTyp => "typ is not at+jwt",
        Refusal::Expired => "ExpiredSignatureError",
        Refusal::WrongAudience => "InvalidAudienceError",
    })
    .await;
}

#[tokio::test]
async fn the_documented_jose_snippet_accepts_our_tokens_and_refuses_bad_ones() {
    let node = std::env::var("TESSERA_TEST_NODE").unwrap_or_else(|_| "node".into());
    let modules =
        std::env::var("TESSERA_TEST_NODE_MODULES").unwrap_or_else(|_| NODE_MODULES.into());
    assert!(
        std::path::Path::new(&modules).join("jose").is_dir(),
        "no jose in {modules}: `npm install --prefix {} jose` (.ci/run does)",
        modules.trim_end_matches("/node_modules")
    );
    // The snippet imports 'jose' as an application does: from a node_modules beside it.
    let dir = TempDir::new();
    std::os::unix::fs::symlink(&modules, dir.0.join("node_modules")).unwrap();
    for file in ["verify_jose.mjs", "run_jose.mjs"] {
        std::fs::copy(format!("{TESTS}/interop/{file}"), dir.0.join(file)).unwrap();
    }
    let run = async |server: &TestServer, tokens: &[String]| {
        let mut command = Command::new(&node);
        command.arg(dir.0.join("run_jose.mjs"));
        snippet_env(&mut command, server);
        run_verifier(command, tokens, "node with npm's jose").await
    };
    check_snippet("jose", run, |refusal| match refusal {
        Refusal::Tampered => "ERR_JWS_SIGNATURE_VERIFICATION_FAILED",
        Refusal::WrongTyp => "\"typ\"",
        Refusal::Expired => "ERR_JWT_EXPIRED",
        Refusal::WrongAudience => "\"aud\"",
    })
    .await;
}

#[tokio::test]
async fn pyjwt_reads_how_the_user_signed_in() {
    // The server's clock a minute behind the real one: PyJWT checks times against the real
    // clock, and the enrolment and login below move it 30 s on.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let start = i64::try_from(now).unwrap() - 60;
    let server = TestServer::start_custom(|_| {}, start, |store| Arc::new(store)).await;
    let alice = server.session("alice", Delivery::Bearer).await;
    let enrolled = crate::factors::enrol(&server, &alice).await;
    server.advance(30);
    let code = crate::factors::code_at(&enrolled.uri, server.service.now()).await;
    let response = server
        .client
        .post(server.url("/v1/login"))
        .json(&json!({ "username": "alice", "password": PASSWORD, "code": code, "delivery": "bearer" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let strong = ClientSession::from_login(Delivery::Bearer, response).await;
    let weak = server.session("admin", Delivery::Bearer).await;
    let mut command = Command::new(python());
    command
        .arg(format!("{TESTS}/interop/run_pyjwt.py"))
        .env("PYTHONDONTWRITEBYTECODE", "1");
    snippet_env(&mut command, &server);
    let needs = "PyJWT with cryptography: `pip install PyJWT cryptography`";
    let report = run_verifier(
        command,
        &[strong.access.clone(), weak.access.clone()],
        needs,
    )
    .await;
    let results = report["results"].as_array().unwrap();
    assert_eq!(results[0]["valid"], true, "{report}");
    assert_eq!(results[0]["amr"], json!(["pwd", "otp"]));
    assert_eq!(results[0]["acr"], "aal2");
    assert_eq!(results[0]["auth_time"], server.service.now());
    assert_eq!(results[1]["valid"], true, "{report}");
    assert_eq!(results[1]["amr"], json!(["pwd"]));
    assert_eq!(results[1]["acr"], "aal1");
}

/// npm's `dpop` makes the proofs (ES256, and Ed25519 under RFC 9864's name): a login, a use, a
/// refresh and a use of the refreshed token pass; a replayed proof, the token as a plain
/// bearer token, a proof by another key and the refresh token with another key are refused
/// with RFC 9449's codes. The key's thumbprint as the library computes it is the one in the
/// token's `cnf.jkt`.
#[tokio::test]
async fn npm_dpop_logs_in_refreshes_and_is_refused_without_its_key() {
    let node = std::env::var("TESSERA_TEST_NODE").unwrap_or_else(|_| "node".into());
    let modules =
        std::env::var("TESSERA_TEST_NODE_MODULES").unwrap_or_else(|_| NODE_MODULES.into());
    assert!(
        std::path::Path::new(&modules).join("dpop").is_dir(),
        "no dpop in {modules}: `npm install --prefix {} dpop` (.ci/run does)",
        modules.trim_end_matches("/node_modules")
    );
    let dir = TempDir::new();
    std::os::unix::fs::symlink(&modules, dir.0.join("node_modules")).unwrap();
    std::fs::copy(
        format!("{TESTS}/interop/dpop_client.mjs"),
        dir.0.join("dpop_client.mjs"),
    )
    .unwrap();
    // The library stamps proofs with the real time: the server's clock starts there too.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let server = TestServer::start_custom(|_| {}, now as i64, |store| Arc::new(store)).await;
    let mut command = Command::new(&node);
    command
        .arg(dir.0.join("dpop_client.mjs"))
        .env("TESSERA_URL", &server.base)
        .env("TESSERA_USERNAME", "alice")
        .env("TESSERA_PASSWORD", PASSWORD);
    let report = run_verifier(command, &[], "node with npm's dpop").await;
    for alg in ["ES256", "Ed25519"] {
        let steps = &report["algorithms"][alg];
        let what = format!("dpop {} {alg}: {steps}", report["version"]);
        assert_eq!(steps["login"], 200, "{what}");
        assert_eq!(steps["token_type"], "DPoP", "{what}");
        let token = steps["access_token"].as_str().unwrap();
        assert_eq!(claims_of(token)["cnf"]["jkt"], steps["jkt"], "{what}");
        assert_eq!(steps["session"], 200, "{what}");
        assert_eq!(steps["username"], "alice", "{what}");
        assert_eq!(
            steps["replayed"],
            json!([401, "invalid_dpop_proof"]),
            "{what}"
        );
        assert_eq!(steps["as_bearer"][0], 401, "{what}");
        assert!(
            steps["as_bearer"][1]
                .as_str()
                .unwrap()
                .starts_with("DPoP error=\"invalid_dpop_proof\""),
            "{what}"
        );
        assert_eq!(
            steps["other_key"],
            json!([401, "invalid_dpop_proof"]),
            "{what}"
        );
        assert_eq!(
            steps["refresh_other_key"],
            json!([400, "invalid_dpop_proof"]),
            "{what}"
        );
        assert_eq!(steps["refresh"], 200, "{what}");
        assert_eq!(steps["refreshed_token_type"], "DPoP", "{what}");
        let renewed = steps["refreshed_access_token"].as_str().unwrap();
        assert_eq!(claims_of(renewed)["cnf"]["jkt"], steps["jkt"], "{what}");
        assert_eq!(steps["session_after_refresh"], 200, "{what}");
    }
    eprintln!("npm dpop {} agreed", report["version"]);
}
