//! Signing keys: rotation (HTTP admin route and CLI), the JWKS over a rotation, and private
//! keys encrypted at rest under the master key.

use std::process::Stdio;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_core::at_rest::MasterKey;
use tessera_core::b64;
use tessera_core::keys::{Algorithm, KeyRecord};
use tessera_store::prelude::*;
use tessera_store_sqlite::SqliteStore;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use crate::cli::{serve, tessera};
use crate::external::spare_port;
use crate::support::*;

fn kid_of(token: &str) -> String {
    let header: Value =
        serde_json::from_slice(&b64::decode(token.split('.').next().unwrap()).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

async fn jwks_kids(client: &reqwest::Client, base: &str) -> Vec<String> {
    let jwks: Value = client
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

async fn rotate_over_http(server: &TestServer, admin: &ClientSession) -> reqwest::Response {
    server
        .send(Method::POST, "/v1/admin/keys/rotate", admin)
        .await
}

#[tokio::test]
async fn rotation_keeps_old_tokens_valid_until_they_expire_then_drops_the_old_key() {
    for alg in ["EdDSA", "ES256"] {
        let server = TestServer::start_with(|c| c.jwt_algorithm = alg.parse().unwrap()).await;
        let old = server.session("alice", Delivery::Bearer).await;
        let old_kid = kid_of(&old.access);
        assert_eq!(
            jwks_kids(&server.client, &server.base).await,
            std::slice::from_ref(&old_kid)
        );

        let admin = server.session("admin", Delivery::Bearer).await;
        let response = rotate_over_http(&server, &admin).await;
        assert_eq!(response.status(), StatusCode::OK, "{alg}");
        let body: Value = response.json().await.unwrap();
        let new_kid = body["kid"].as_str().unwrap().to_owned();
        assert_eq!(body["algorithm"], alg);
        assert!(body.get("private").is_none() && body.get("d").is_none());
        assert_ne!(new_kid, old_kid);

        // Both keys are published; the old token still verifies; new tokens use the new key.
        let mut kids = jwks_kids(&server.client, &server.base).await;
        kids.sort();
        let mut expected = vec![old_kid.clone(), new_kid.clone()];
        expected.sort();
        assert_eq!(kids, expected, "{alg}: JWKS lists both keys after rotation");
        assert_eq!(
            server.send(Method::GET, "/v1/session", &old).await.status(),
            StatusCode::OK,
            "{alg}: a token signed by the previous key still verifies"
        );
        let new = server.session("alice", Delivery::Bearer).await;
        assert_eq!(
            kid_of(&new.access),
            new_kid,
            "{alg}: a new login uses the new key"
        );

        // The old key stays as long as a token it signed can be accepted: the access-token
        // lifetime (600 s) plus the leeway (30 s) after the rotation, and not a second more.
        server.advance(600 + 30 - 1);
        assert_eq!(
            server.send(Method::GET, "/v1/session", &old).await.status(),
            StatusCode::OK,
            "{alg}: still inside exp + leeway"
        );
        assert!(
            jwks_kids(&server.client, &server.base)
                .await
                .contains(&old_kid)
        );
        server.advance(1);
        assert_eq!(
            jwks_kids(&server.client, &server.base).await,
            std::slice::from_ref(&new_kid),
            "{alg}: the old key has left the JWKS"
        );
        // The old token had expired (exp + leeway) exactly when its key left. The server saw
        // these exact bytes verified before (verified-token cache), so it reports the expiry;
        // either way the token is refused.
        let response = server.send(Method::GET, "/v1/session", &old).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(problem_code(response).await, "token_expired");
        let fresh = server.session("alice", Delivery::Bearer).await;
        assert_eq!(
            server
                .send(Method::GET, "/v1/session", &fresh)
                .await
                .status(),
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn rotating_twice_keeps_every_key_whose_tokens_may_live() {
    let server = TestServer::start().await;
    let admin = server.session("admin", Delivery::Bearer).await;
    let first = server.session("alice", Delivery::Bearer).await;
    assert_eq!(
        rotate_over_http(&server, &admin).await.status(),
        StatusCode::OK
    );
    server.advance(300);
    let second = server.session("alice", Delivery::Bearer).await;
    assert_eq!(
        rotate_over_http(&server, &admin).await.status(),
        StatusCode::OK
    );
    assert_eq!(jwks_kids(&server.client, &server.base).await.len(), 3);
    for token in [&first, &second] {
        assert_eq!(
            server
                .send(Method::GET, "/v1/session", token)
                .await
                .status(),
            StatusCode::OK
        );
    }
    // 630 s after the first rotation the first key goes; the second stays 300 s longer.
    server.advance(330);
    let kids = jwks_kids(&server.client, &server.base).await;
    assert_eq!(kids.len(), 2);
    assert!(!kids.contains(&kid_of(&first.access)));
    assert!(kids.contains(&kid_of(&second.access)));
    server.advance(300);
    assert_eq!(jwks_kids(&server.client, &server.base).await.len(), 1);
}

#[tokio::test]
async fn hs256_keys_are_never_published_across_rotation() {
    let server = TestServer::start_with(|c| c.jwt_algorithm = Algorithm::Hs256).await;
    let admin = server.session("admin", Delivery::Bearer).await;
    let old = server.session("alice", Delivery::Bearer).await;
    assert_eq!(
        rotate_over_http(&server, &admin).await.status(),
        StatusCode::OK
    );
    assert!(jwks_kids(&server.client, &server.base).await.is_empty());
    let new = server.session("alice", Delivery::Bearer).await;
    assert_ne!(kid_of(&new.access), kid_of(&old.access));
    for token in [&old, &new] {
        assert_eq!(
            server
                .send(Method::GET, "/v1/session", token)
                .await
                .status(),
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn admin_key_rotation_requires_the_admin_role() {
    let server = TestServer::start().await;
    let before = jwks_kids(&server.client, &server.base).await;
    // No session: 401.
    let response = server
        .client
        .post(server.url("/v1/admin/keys/rotate"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(problem_code(response).await, "unauthenticated");
    // A session without the admin role: 403, bearer and cookie alike.
    for delivery in [Delivery::Bearer, Delivery::Cookie] {
        let alice = server.session("alice", delivery).await;
        let response = rotate_over_http(&server, &alice).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{delivery:?}");
        assert_eq!(problem_code(response).await, "forbidden");
    }
    // An admin's cookie sent cross-site: refused before the handler runs.
    let admin = server.session("admin", Delivery::Cookie).await;
    let response = admin
        .authorize(server.client.post(server.url("/v1/admin/keys/rotate")))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(problem_code(response).await, "cross_site_request");
    // GET changes nothing.
    let response = server
        .send(Method::GET, "/v1/admin/keys/rotate", &admin)
        .await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(jwks_kids(&server.client, &server.base).await, before);
    // The admin, same-site: rotated.
    let response = rotate_over_http(&server, &admin).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(jwks_kids(&server.client, &server.base).await.len(), 2);
}

// ------------------------------------------------------------------ through the binary

/// Starts `tessera serve` with extra environment; returns the child, its port and its stderr
/// up to "listening on".
async fn serve_with_env(dir: &TempDir, env: &[(&str, &str)]) -> (Child, u16, Vec<String>) {
    let port = spare_port();
    let mut child = tessera(dir)
        .envs(env.iter().copied())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let wait = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line.contains("listening on");
            seen.push(line);
            if done {
                return;
            }
        }
        panic!("tessera exited before listening: {seen:?}");
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("tessera started in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port, seen)
}

fn admin_password(stderr: &[String]) -> String {
    let line = stderr
        .iter()
        .find(|l| l.contains("with password: "))
        .expect("admin password printed");
    line.rsplit("with password: ")
        .next()
        .unwrap()
        .trim()
        .to_owned()
}

async fn bearer_login(base: &str, password: &str) -> String {
    let body: Value = reqwest::Client::new()
        .post(format!("{base}/v1/login"))
        .json(&json!({ "username": "admin", "password": password, "delivery": "bearer" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// `tessera serve` (or any command) expected to fail at start: exit code and stderr.
async fn failing(dir: &TempDir, env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tessera(dir).envs(env.iter().copied()).args(args).output(),
    )
    .await
    .expect("exits promptly")
    .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn cli_key_rotate_on_a_running_server_takes_effect_without_restart() {
    let dir = TempDir::new();
    let (mut child, port, stderr) = serve(&dir, &[]).await;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let password = admin_password(&stderr);
    let old = bearer_login(&base, &password).await;
    let old_kid = kid_of(&old);

    let out = tessera(&dir)
        .args(["key", "rotate"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let new_kid = stdout.split_whitespace().nth(3).unwrap().to_owned();
    assert!(stdout.starts_with("new signing key "), "{stdout}");
    assert_ne!(new_kid, old_kid);

    // The running server signs with the new key at once: it re-reads the keys before minting.
    let new = bearer_login(&base, &password).await;
    assert_eq!(kid_of(&new), new_kid, "a new login carries the new kid");
    let mut kids = jwks_kids(&client, &base).await;
    kids.sort();
    let mut expected = vec![old_kid, new_kid];
    expected.sort();
    assert_eq!(kids, expected, "the JWKS lists both keys");
    for token in [&old, &new] {
        let response = client
            .get(format!("{base}/v1/session"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "old and new tokens verify"
        );
    }
    child.kill().await.unwrap();
}

#[tokio::test]
async fn cli_key_rotate_reaches_a_server_that_mints_nothing() {
    // Without any login to trigger a re-read, the background re-read (every
    // `key_poll_interval`, 2 s here) brings the rotation in: SQLite has no cross-process notice.
    let dir = TempDir::new();
    let (mut child, port, stderr) =
        serve_with_env(&dir, &[("TESSERA_KEY_POLL_INTERVAL", "2")]).await;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let _ = admin_password(&stderr);
    let out = tessera(&dir)
        .args(["key", "rotate"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let mut listed = 0;
    for _ in 0..150 {
        listed = jwks_kids(&client, &base).await.len();
        if listed == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed, 2, "the JWKS picked up the rotation within 15 s");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn private_keys_are_encrypted_in_the_store() {
    let dir = TempDir::new();
    let master = MasterKey::generate().unwrap();
    let text = master.to_text();
    let (mut child, _, stderr) = serve_with_env(&dir, &[("TESSERA_MASTER_KEY", &text)]).await;
    assert!(
        !stderr.iter().any(|l| l.contains("generated a master key")),
        "{stderr:?}"
    );
    assert!(!dir.0.join("tessera-data/master.key").exists());
    child.kill().await.unwrap();
    let _ = child.wait().await;

    let store = SqliteStore::open(&dir.0.join("tessera-data/tessera.db")).unwrap();
    let stored = store.signing_keys().await.unwrap();
    assert_eq!(stored.len(), 1);
    let opened = master.open(&stored[0]).unwrap();
    assert!(stored[0].private.starts_with(b"TSK1"));
    assert_ne!(stored[0].private, opened.private);
    // The PKCS#8 document is nowhere in the stored bytes, not even in part.
    assert!(
        !stored[0]
            .private
            .windows(16)
            .any(|w| opened.private.windows(16).any(|p| p == w))
    );
    opened.signing_key().unwrap();
}

#[tokio::test]
async fn startup_refuses_stored_keys_it_cannot_decrypt() {
    let dir = TempDir::new();
    let first = MasterKey::generate().unwrap().to_text();
    let (mut child, _, _) = serve_with_env(&dir, &[("TESSERA_MASTER_KEY", &first)]).await;
    child.kill().await.unwrap();
    let _ = child.wait().await;

    let other = MasterKey::generate().unwrap().to_text();
    for args in [
        &["serve", "--listen", "127.0.0.1:0"][..],
        &["key", "list"][..],
    ] {
        let (code, stderr) = failing(&dir, &[("TESSERA_MASTER_KEY", &other)], args).await;
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("cannot be decrypted")
                && stderr.contains("the master key differs")
                && stderr.contains("TESSERA_MASTER_KEY"),
            "{args:?}: {stderr}"
        );
    }
    // With the right key it starts again.
    let (mut child, _, _) = serve_with_env(&dir, &[("TESSERA_MASTER_KEY", &first)]).await;
    child.kill().await.unwrap();
}

#[tokio::test]
async fn startup_refuses_unencrypted_stored_keys() {
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.0.join("tessera-data")).unwrap();
    let store = SqliteStore::open(&dir.0.join("tessera-data/tessera.db")).unwrap();
    let plain = KeyRecord::generate(Algorithm::EdDsa, 0).unwrap();
    store.add_signing_key(&plain, 0).await.unwrap();
    drop(store);
    let master = MasterKey::generate().unwrap().to_text();
    let (code, stderr) = failing(
        &dir,
        &[("TESSERA_MASTER_KEY", &master)],
        &["serve", "--listen", "127.0.0.1:0"],
    )
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("signing key {} is stored unencrypted", plain.kid)),
        "{stderr}"
    );
}

#[tokio::test]
async fn first_start_generates_a_master_key_file_and_a_lost_one_is_reported() {
    let dir = TempDir::new();
    let (mut child, _, stderr) = serve(&dir, &[]).await;
    let path = dir.0.join("tessera-data/master.key");
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("generated a master key") && l.contains("master.key")),
        "{stderr:?}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "owner-only key file");
    }
    let key = std::fs::read_to_string(&path).unwrap();
    MasterKey::parse(&key).unwrap();
    child.kill().await.unwrap();
    let _ = child.wait().await;

    // A second start reuses it, silently.
    let (mut child, _, stderr) = serve(&dir, &[]).await;
    assert!(
        !stderr.iter().any(|l| l.contains("master key")),
        "{stderr:?}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), key);
    child.kill().await.unwrap();
    let _ = child.wait().await;

    // Without it, the keys cannot be used, and no new key file is made over the loss.
    std::fs::remove_file(&path).unwrap();
    let (code, stderr) = failing(&dir, &[], &["serve", "--listen", "127.0.0.1:0"]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no master key was given"), "{stderr}");
    assert!(!path.exists());

    // The key kept elsewhere, named by master_key_file (here through its environment
    // variable), works again.
    let elsewhere = dir.0.join("kept-elsewhere.key");
    std::fs::write(&elsewhere, &key).unwrap();
    let (mut child, _, _) = serve_with_env(
        &dir,
        &[("TESSERA_MASTER_KEY_FILE", elsewhere.to_str().unwrap())],
    )
    .await;
    child.kill().await.unwrap();
}

#[tokio::test]
async fn an_invalid_master_key_is_refused_with_a_clear_message() {
    let dir = TempDir::new();
    let (code, stderr) = failing(
        &dir,
        &[("TESSERA_MASTER_KEY", "too short")],
        &["serve", "--listen", "127.0.0.1:0"],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("TESSERA_MASTER_KEY is not a master key"),
        "{stderr}"
    );
    let key = MasterKey::generate().unwrap().to_text();
    let file = dir.0.join("k");
    std::fs::write(&file, &key).unwrap();
    let (code, stderr) = failing(
        &dir,
        &[
            ("TESSERA_MASTER_KEY", &key),
            ("TESSERA_MASTER_KEY_FILE", file.to_str().unwrap()),
        ],
        &["key", "list"],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("set only one"), "{stderr}");
}
