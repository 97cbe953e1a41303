//! The `tessera` binary as a user runs it.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_tessera");

/// The binary, run in `dir`, with fast Argon2 and no inherited secrets.
pub(crate) fn tessera(dir: &TempDir) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(&dir.0)
        .env_remove("TESSERA_ADMIN_PASSWORD")
        .env_remove("TESSERA_MASTER_KEY")
        .env("TESSERA_ARGON2_MEMORY_KIB", "1024")
        .env("TESSERA_ARGON2_ITERATIONS", "1")
        .kill_on_drop(true);
    cmd
}

/// Creates the store in `dir` as an operator would before the first administration command
/// (only `serve` and `migrate` create one).
pub(crate) async fn migrate(dir: &TempDir) {
    let out = tessera(dir).arg("migrate").output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `tessera serve` and collects stderr until it says it is listening.
pub(crate) async fn serve(dir: &TempDir, extra: &[&str]) -> (Child, u16, Vec<String>) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = tessera(dir)
        .args(["serve", "--listen", &listen])
        .args(extra)
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
    // Keep draining stderr so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port, seen)
}

#[tokio::test]
async fn first_start_creates_admin_and_prints_its_password_once() {
    let dir = TempDir::new();
    let (mut child, port, stderr) = serve(&dir, &[]).await;
    let line = stderr
        .iter()
        .find(|l| l.contains("with password: "))
        .expect("password printed");
    let password = line
        .rsplit("with password: ")
        .next()
        .unwrap()
        .trim()
        .to_owned();
    assert!(
        dir.0.join("tessera-data/tessera.db").exists(),
        "data kept in ./tessera-data"
    );

    let client = reqwest::Client::new();
    let login = |password: String| {
        let client = client.clone();
        async move {
            client
                .post(format!("http://127.0.0.1:{port}/v1/login"))
                .json(&json!({ "username": "admin", "password": password, "delivery": "bearer" }))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(login(password.clone()).await.status(), StatusCode::OK);
    child.kill().await.unwrap();

    let (mut child, port2, stderr) = serve(&dir, &[]).await;
    assert!(
        !stderr.iter().any(|l| l.contains("password")),
        "printed once only: {stderr:?}"
    );
    let response = client
        .post(format!("http://127.0.0.1:{port2}/v1/login"))
        .json(&json!({ "username": "admin", "password": password, "delivery": "bearer" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "same data, same admin");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn admin_password_can_come_from_the_environment() {
    let dir = TempDir::new();
    let port = free_port();
    let mut child = tessera(&dir)
        .env("TESSERA_ADMIN_PASSWORD", "from the environment")
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let mut status = None;
    for _ in 0..100 {
        if let Ok(r) = client
            .post(format!("http://127.0.0.1:{port}/v1/login"))
            .json(&json!({ "username": "admin", "password": "from the environment", "delivery": "bearer" }))
            .send()
            .await
        {
            status = Some(r.status());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, Some(StatusCode::OK));
    child.kill().await.unwrap();
}

#[tokio::test]
async fn plain_http_off_loopback_is_refused_with_a_clear_message() {
    let dir = TempDir::new();
    let out = tessera(&dir)
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to serve plain HTTP"), "{stderr}");
}

#[tokio::test]
async fn self_signed_tls_serves_https_with_hsts() {
    let dir = TempDir::new();
    let (mut child, port, _) = serve(&dir, &["--tls-self-signed"]).await;
    let client = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let response = client
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    // Plain HTTP to the TLS port does not get a successful answer.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
    assert!(!plain.is_ok_and(|r| r.status().is_success()));
    child.kill().await.unwrap();
}

#[tokio::test]
async fn usage_errors_exit_2_and_runtime_errors_exit_1() {
    let dir = TempDir::new();
    migrate(&dir).await;
    for args in [
        &["frobnicate"][..],
        &["user"][..],
        &["serve", "--tls-cert", "x"][..],
    ] {
        let out = tessera(&dir).args(args).output().await.unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
    let out = tessera(&dir)
        .args(["user", "show", "nobody"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user \"nobody\""));
    let out = tessera(&dir)
        .args(["--config", "/nonexistent.toml", "user", "list"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn user_session_key_and_token_commands_work_on_the_store() {
    let dir = TempDir::new();
    migrate(&dir).await;
    let run = |args: &'static [&'static str], stdin: Option<&'static str>| {
        let mut cmd = tessera(&dir);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        async move {
            let mut child = cmd.spawn().unwrap();
            let mut input = child.stdin.take().unwrap();
            if let Some(text) = stdin {
                input.write_all(text.as_bytes()).await.unwrap();
            }
            drop(input);
            let out = child.wait_with_output().await.unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (code, out, err) = run(
        &["user", "add", "bob", "--role", "editor", "--password-stdin"],
        Some("bobs password 1\n"),
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("created user bob"));
    let (code, _, _) = run(
        &["user", "add", "bob", "--password-stdin"],
        Some("another password\n"),
    )
    .await;
    assert_eq!(code, Some(1), "duplicate username");
    let (_, out, _) = run(&["user", "list"], None).await;
    assert!(out.contains("bob") && out.contains("roles=editor"), "{out}");

    // Log bob in through a server on the same data, then manage his session from the CLI.
    let (mut child, port, _) = serve(&dir, &[]).await;
    let body: serde_json::Value = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/login"))
        .json(&json!({ "username": "bob", "password": "bobs password 1", "delivery": "bearer" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    let sid = body["session_id"].as_str().unwrap().to_owned();

    let (_, out, _) = run(&["session", "list", "--user", "bob"], None).await;
    assert!(out.contains(&sid), "{out}");
    let out = tessera(&dir)
        .args(["token", "inspect", &token])
        .output()
        .await
        .unwrap();
    let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inspected["status"], "valid");
    assert_eq!(inspected["claims"]["name"], "bob");

    let verify = || async {
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/v1/verify"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status()
    };
    // Verified twice first, so the server holds the session in its caches when the CLI,
    // another process, revokes it.
    for _ in 0..2 {
        assert_eq!(verify().await, StatusCode::OK);
    }
    let (code, out, _) = run(&["session", "revoke", "--user", "bob"], None).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("revoked 1 session"), "{out}");
    assert_eq!(
        verify().await,
        StatusCode::UNAUTHORIZED,
        "CLI revocation is seen by the server at once"
    );

    let (_, out, _) = run(&["key", "list"], None).await;
    assert_eq!(
        out.lines().filter(|l| l.contains("current")).count(),
        1,
        "{out}"
    );
    let (code, _, _) = run(&["key", "rotate"], None).await;
    assert_eq!(code, Some(0));
    let (_, out, _) = run(&["key", "list"], None).await;
    assert_eq!(out.lines().count(), 2);
    let (code, out, _) = run(&["user", "set-roles", "bob", "viewer"], None).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("viewer"));
    let (code, _, _) = run(&["user", "remove", "bob"], None).await;
    assert_eq!(code, Some(0));
    let (_, out, _) = run(&["user", "list"], None).await;
    assert!(!out.contains("bob"));
    child.kill().await.unwrap();
}

/// Issue 11 defect 7: the CLI refuses names the service would refuse, as usage errors (exit 2)
/// that say which rule, and stores usernames in NFC like every other way in.
#[tokio::test]
async fn user_commands_refuse_bad_names_and_normalise_usernames() {
    let dir = TempDir::new();
    migrate(&dir).await;
    let run = |args: Vec<String>| {
        let mut cmd = tessera(&dir);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        async move {
            let mut child = cmd.spawn().unwrap();
            let mut input = child.stdin.take().unwrap();
            // Commands refused while parsing exit without reading: ignore the broken pipe.
            let _ = input.write_all(b"a long password\n").await;
            drop(input);
            let out = child.wait_with_output().await.unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let (code, _, err) = run(args(&["user", "add", "bob", "--password-stdin"])).await;
    assert_eq!(code, Some(0), "{err}");
    for (command, rule) in [
        (
            args(&["user", "add", "al\u{200B}ice", "--password-stdin"]),
            "zero-width",
        ),
        (
            args(&["user", "add", "bob\u{202E}x", "--password-stdin"]),
            "bidi",
        ),
        (
            args(&["user", "add", "cli", "--password-stdin"]),
            "reserved",
        ),
        (
            args(&["user", "add", "System", "--password-stdin"]),
            "reserved",
        ),
        (
            args(&[
                "user",
                "add",
                "carol",
                "--role",
                "editor,admin",
                "--password-stdin",
            ]),
            "role \"editor,admin\"",
        ),
        (
            args(&[
                "user",
                "add",
                "carol",
                "--permission",
                "a\r\nb",
                "--password-stdin",
            ]),
            "permission",
        ),
        (
            args(&["user", "set-roles", "bob", "viewer", "a b"]),
            "role \"a b\"",
        ),
        (args(&["user", "set-roles", "bob", "x\ny"]), "role"),
    ] {
        let (code, out, err) = run(command.clone()).await;
        assert_eq!(code, Some(2), "{command:?}: {out} {err}");
        assert!(err.contains(rule), "{command:?}: {err}");
    }
    let (_, out, _) = run(args(&["user", "list"])).await;
    assert_eq!(out.lines().count(), 1, "only bob: {out}");
    assert!(
        out.starts_with("bob\t") && out.contains("roles=\t"),
        "{out}"
    );

    // Added decomposed, found by the composed spelling (and the other way round).
    let (code, out, err) = run(args(&["user", "add", "jose\u{301}", "--password-stdin"])).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("created user jos\u{E9} "), "{out}");
    for typed in ["jos\u{E9}", "jose\u{301}"] {
        let (code, out, err) = run(args(&["user", "show", typed])).await;
        assert_eq!(code, Some(0), "{typed:?}: {err}");
        let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(shown["username"], "jos\u{E9}");
    }
    let (code, _, _) = run(args(&["user", "add", "jos\u{E9}", "--password-stdin"])).await;
    assert_eq!(code, Some(1), "the composed spelling is the same user");
}
