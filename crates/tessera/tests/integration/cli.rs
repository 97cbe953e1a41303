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
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("No such file").count(),
        1,
        "the reason is given once: {stderr}"
    );
    assert!(
        stderr.contains("cannot read config file /nonexistent.toml"),
        "{stderr}"
    );
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

/// Runs `tessera ARGS` in `dir` with `env` added: exit code, stdout, stderr.
async fn run_with(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = tessera(dir)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `tessera config check FILE` in `dir` with `env` added: exit code, stdout, stderr.
async fn config_check(dir: &TempDir, file: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    run_with(dir, &["config", "check", file], env).await
}

#[tokio::test]
async fn config_defaults_prints_every_key_as_toml_that_checks_and_loads_as_the_defaults() {
    let dir = TempDir::new();
    let out = tessera(&dir)
        .args(["config", "defaults"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    for key in tessera_server::Config::KEYS {
        assert!(text.contains(key.name), "{}", key.name);
        assert!(text.contains(&key.env_name()), "{}", key.name);
    }
    assert!(text.contains("\nidle_timeout = \"30m\"\n"), "{text}");
    assert!(text.contains("# Inactivity that ends a session."), "{text}");
    std::fs::write(dir.0.join("defaults.toml"), &text).unwrap();
    let (code, stdout, stderr) = config_check(&dir, "defaults.toml", &[]).await;
    assert_eq!(
        (code, stdout.as_str()),
        (0, "defaults.toml: OK\n"),
        "{stderr}"
    );
    let loaded = tessera_server::Config::load(Some(&dir.0.join("defaults.toml")), []).unwrap();
    assert_eq!(loaded, tessera_server::Config::default());
}

#[tokio::test]
async fn config_check_names_file_line_and_key_with_a_did_you_mean() {
    let dir = TempDir::new();
    std::fs::write(
        dir.0.join("typo.toml"),
        "listen = \"127.0.0.1:9000\"\n\nidle_timout = \"5m\"\n",
    )
    .unwrap();
    // `config check`, `serve` and the other commands refuse it with the same message.
    let typo = "typo.toml:3:1: `idle_timout`: unknown key; did you mean `idle_timeout`?";
    for args in [
        &["config", "check", "typo.toml"][..],
        &["--config", "typo.toml", "serve"][..],
        &["--config", "typo.toml", "user", "list"][..],
    ] {
        let (code, stdout, stderr) = run_with(&dir, args, &[]).await;
        assert_eq!((code, stdout.as_str()), (2, ""), "{args:?}: {stderr}");
        assert!(stderr.contains(typo), "{args:?}: {stderr}");
    }
    // A bad value: its line and column, and its key.
    std::fs::write(
        dir.0.join("value.toml"),
        "issuer = \"me\"\nleeway = \"5 minutes ago\"\n",
    )
    .unwrap();
    let (code, _, stderr) = config_check(&dir, "value.toml", &[]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("value.toml:2:10: `leeway`: "), "{stderr}");
    assert!(stderr.contains("invalid duration"), "{stderr}");
    // A value that reads but is refused by the checks is found at its key.
    std::fs::write(dir.0.join("prefix.toml"), "login_ipv6_prefix = 0\n").unwrap();
    let (code, _, stderr) = config_check(&dir, "prefix.toml", &[]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("prefix.toml:1:1: `login_ipv6_prefix`: must be between 1 and 128"),
        "{stderr}"
    );
    // A good file: OK on stdout, exit 0, the environment applied and checked too.
    std::fs::write(dir.0.join("good.toml"), "idle_timeout = \"5m\"\n").unwrap();
    let (code, stdout, stderr) = config_check(&dir, "good.toml", &[]).await;
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (0, "good.toml: OK\n", "")
    );
    let (code, _, stderr) =
        config_check(&dir, "good.toml", &[("TESSERA_ABSOLUTE_TIMEOUT", "1m")]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("good.toml:1:1: `idle_timeout`: cannot exceed absolute_timeout"),
        "{stderr}"
    );
    let (code, _, stderr) = config_check(&dir, "good.toml", &[("TESSERA_LISTEN", "nowhere")]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("environment variable TESSERA_LISTEN: `listen`: must be an IP address"),
        "{stderr}"
    );
}

#[tokio::test]
async fn unknown_tessera_variables_are_refused_naming_the_variable_meant() {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("good.toml"), "").unwrap();
    let (code, _, stderr) = config_check(&dir, "good.toml", &[("TESSERA_IDLE_TIMOUT", "5m")]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("environment variable TESSERA_IDLE_TIMOUT: ")
            && stderr.contains("did you mean `TESSERA_IDLE_TIMEOUT`?"),
        "{stderr}"
    );
    let (code, _, stderr) =
        run_with(&dir, &["user", "list"], &[("TESSERA_ADMIN_PASWORD", "x")]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("did you mean `TESSERA_ADMIN_PASSWORD`?"),
        "{stderr}"
    );
    // The variables tessera reads besides the keys, and the test suite's, are accepted.
    let (code, _, stderr) = config_check(
        &dir,
        "good.toml",
        &[
            ("TESSERA_ADMIN_PASSWORD", "x"),
            ("TESSERA_MASTER_KEY", "x"),
            ("TESSERA_CONFIG", "good.toml"),
            ("TESSERA_TEST_SOMETHING", "x"),
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
}

/// Every `TESSERA_*` name the binary and the server library mention is a configuration key's
/// variable or one that the loader accepts besides them, so none is refused at start.
#[test]
fn every_tessera_variable_in_the_sources_is_accepted_by_the_loader() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let pattern = regex::Regex::new(r#""(TESSERA_[A-Z0-9_]+)""#).unwrap();
    let mut files = Vec::new();
    for dir in ["src", "../tessera-server/src"] {
        let mut pending = vec![root.join(dir)];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    // Unit tests name refused variables on purpose.
                    && !path.ends_with("tests.rs")
                {
                    files.push(path);
                }
            }
        }
    }
    let mut seen = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for name in pattern.captures_iter(&text).map(|c| c[1].to_owned()) {
            seen += 1;
            let is_key = tessera_server::Config::KEYS
                .iter()
                .any(|key| key.env_name() == name);
            assert!(
                is_key
                    || tessera_server::config::is_other_variable(&name)
                    || name == tessera_server::config::TEST_ENV_PREFIX,
                "{name} in {} would be refused",
                file.display()
            );
        }
    }
    assert!(seen >= 3, "the sources name TESSERA_CONFIG and others");
}
