//! The `tessera` binary as a user runs it.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::external::spare_port;
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

/// Starts `tessera serve` and collects stderr until it says it is listening.
pub(crate) async fn serve(dir: &TempDir, extra: &[&str]) -> (Child, u16, Vec<String>) {
    let port = spare_port();
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
    let port = spare_port();
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
    let (_, out, _) = run(&["key", "list", "--no-header"], None).await;
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
    let (_, out, _) = run(args(&["user", "list", "--no-header"])).await;
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

// ----------------------------------------------------------------- issue 15: CLI and logs

/// Runs the binary in `dir` with `input` on standard input: exit code, stdout, stderr.
async fn run_stdin(dir: &TempDir, args: &[&str], input: &str) -> (i32, String, String) {
    let mut child = tessera(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Creates `name` with `password` (and any `user add` flags in `extra`) through the CLI.
async fn add_user(dir: &TempDir, name: &str, password: &str, extra: &[&str]) {
    let args = [&["user", "add", name, "--password-stdin"][..], extra].concat();
    let (code, _, err) = run_stdin(dir, &args, &format!("{password}\n")).await;
    assert_eq!(code, 0, "user add {name}: {err}");
}

/// Logs `name` in with a bearer token; the response's status and body.
async fn login(port: u16, name: &str, password: &str) -> (StatusCode, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/login"))
        .json(&json!({ "username": name, "password": password, "delivery": "bearer" }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

async fn verify(port: u16, token: &str) -> StatusCode {
    reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/v1/verify"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

fn parse_json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not one JSON document ({e}): {text}"))
}

/// Issue 15: every command that prints records takes `--json` (one document, an array for
/// lists); the tables have a header row, and `--no-header` gives the rows alone, as before.
#[tokio::test]
async fn record_commands_print_json_and_tables_have_a_header_row() {
    let dir = TempDir::new();
    migrate(&dir).await;
    let password = "bobs password 1";
    add_user(
        &dir,
        "bob",
        password,
        &["--role", "editor", "--permission", "docs.read"],
    )
    .await;
    let (mut child, port, _) = serve(&dir, &[]).await;
    let (status, body) = login(port, "bob", password).await;
    assert_eq!(status, StatusCode::OK);
    let token = body["access_token"].as_str().unwrap().to_owned();
    let sid = body["session_id"].as_str().unwrap().to_owned();
    child.kill().await.unwrap();
    let _ = child.wait().await;

    for (args, header) in [
        (&["user", "list"][..], "username\tid\troles\tstatus"),
        (&["session", "list"][..], "id\tuser\tcreated\tlast_seen\tip"),
        (&["key", "list"][..], "kid\talgorithm\tcreated\tstatus"),
        (
            &["audit"][..],
            "at\tkind\tactor\tsubject\tsession\tip\tdetail",
        ),
    ] {
        let (code, table, err) = run_with(&dir, args, &[]).await;
        assert_eq!(code, 0, "{args:?}: {err}");
        let (first, rows) = table.split_once('\n').unwrap();
        assert_eq!(first, header, "{args:?}: {table}");
        assert!(!rows.is_empty(), "{args:?}: a record under the header");
        let (code, bare, _) = run_with(&dir, &[args, &["--no-header"]].concat(), &[]).await;
        assert_eq!((code, bare.as_str()), (0, rows), "{args:?} --no-header");
        let (code, json, err) = run_with(&dir, &[args, &["--json"]].concat(), &[]).await;
        assert_eq!(code, 0, "{args:?} --json: {err}");
        let records = parse_json(&json);
        assert_eq!(
            records.as_array().map(Vec::len),
            Some(rows.lines().count()),
            "{args:?}: one array, one element per row: {json}"
        );
    }

    let json = |args: &'static [&'static str]| {
        let dir = &dir;
        async move {
            let (code, out, err) = run_with(dir, args, &[]).await;
            assert_eq!(code, 0, "{args:?}: {err}");
            parse_json(&out)
        }
    };
    let users = json(&["user", "list", "--json"]).await;
    assert_eq!(users[0]["username"], "bob");
    assert_eq!(users[0]["roles"], json!(["editor"]));
    assert_eq!(users[0]["permissions"], json!(["docs.read"]));
    assert_eq!(users[0]["disabled"], false);
    assert!(users[0].get("password_hash").is_none());
    let sessions = json(&["session", "list", "--json"]).await;
    assert_eq!(sessions[0]["id"], sid.as_str());
    assert_eq!(sessions[0]["username"], "bob");
    let keys = json(&["key", "list", "--json"]).await;
    assert!(keys[0]["kid"].is_string() && keys[0]["retired_at"].is_null());
    assert_eq!(
        keys[0].as_object().unwrap().len(),
        4,
        "no key material: {keys}"
    );
    let events = json(&["audit", "--json"]).await;
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "login.succeeded" && e["subject"] == "bob"),
        "{events}"
    );
    let user = json(&["user", "show", "bob", "--json"]).await;
    assert_eq!(user["live_sessions"], 1);
    assert_eq!(
        user,
        json(&["user", "show", "bob"]).await,
        "JSON either way"
    );

    let (code, out, err) = run_stdin(&dir, &["token", "inspect", "--json"], &token).await;
    assert_eq!(code, 0, "{err}");
    let inspected = parse_json(&out);
    assert_eq!(inspected["status"], "valid");
    assert_eq!(inspected["session"]["id"], sid.as_str());
}

/// Issue 15: users are disabled, enabled and given permissions from the command line through
/// the same service calls as the admin API: sessions revoked, changes audited as `cli`.
#[tokio::test]
async fn users_are_disabled_enabled_and_given_permissions_from_the_command_line() {
    let dir = TempDir::new();
    migrate(&dir).await;
    let password = "bobs password 1";
    add_user(&dir, "bob", password, &[]).await;
    let (mut child, port, _) = serve(&dir, &[]).await;
    let (_, body) = login(port, "bob", password).await;
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(verify(port, &token).await, StatusCode::OK);

    let (code, out, err) = run_with(&dir, &["user", "disable", "bob"], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("disabled user bob"), "{out}");
    assert_eq!(
        verify(port, &token).await,
        StatusCode::UNAUTHORIZED,
        "their sessions are revoked at once"
    );
    assert_eq!(
        login(port, "bob", password).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (_, out, _) = run_with(&dir, &["user", "list", "--json"], &[]).await;
    assert_eq!(parse_json(&out)[0]["disabled"], true);

    let (code, _, err) = run_with(&dir, &["user", "enable", "bob"], &[]).await;
    assert_eq!(code, 0, "{err}");
    let (status, body) = login(port, "bob", password).await;
    assert_eq!(status, StatusCode::OK, "enabled again");
    let token = body["access_token"].as_str().unwrap().to_owned();

    let args = ["user", "set-permissions", "bob", "docs.read", "docs.write"];
    let (code, out, err) = run_with(&dir, &args, &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("docs.read,docs.write"), "{out}");
    assert_eq!(
        verify(port, &token).await,
        StatusCode::UNAUTHORIZED,
        "no token keeps the old permissions"
    );
    let (_, out, _) = run_with(&dir, &["user", "show", "bob"], &[]).await;
    assert_eq!(
        parse_json(&out)["permissions"],
        json!(["docs.read", "docs.write"])
    );
    child.kill().await.unwrap();

    let (code, _, err) = run_with(&dir, &["user", "set-permissions", "bob", "a b"], &[]).await;
    assert_eq!(code, 2, "a bad permission name is a usage error: {err}");
    assert!(err.contains("permission"), "{err}");
    let (code, _, err) = run_with(&dir, &["user", "disable", "nobody"], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no user \"nobody\""), "{err}");

    let (_, out, _) = run_with(&dir, &["audit", "--kind", "user.disabled", "--json"], &[]).await;
    let details: Vec<_> = parse_json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["actor"], "cli");
            assert_eq!(e["subject"], "bob");
            e["detail"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(details, ["enabled", "disabled"], "newest first");
    let (_, out, _) = run_with(&dir, &["audit", "--kind", "user.updated", "--json"], &[]).await;
    let updated = parse_json(&out);
    assert!(
        updated[0]["detail"]
            .as_str()
            .unwrap()
            .contains("permissions=docs.read,docs.write"),
        "{updated}"
    );
}

/// Issue 15: `token inspect` reads the token from standard input (`-` or no argument), and
/// warns when it is given on the command line, where `ps` and shell history show it.
#[tokio::test]
async fn token_inspect_reads_standard_input_and_warns_about_a_token_on_the_command_line() {
    let dir = TempDir::new();
    migrate(&dir).await;
    for args in [&["token", "inspect", "-"][..], &["token", "inspect"][..]] {
        let (code, _, err) = run_stdin(&dir, args, "not-a-token\n").await;
        assert_eq!(code, 1, "{args:?}");
        assert!(err.contains("token is malformed"), "{args:?}: {err}");
        assert!(!err.contains("warning"), "{args:?}: {err}");
    }
    let (code, _, err) = run_stdin(&dir, &["token", "inspect"], "").await;
    assert_eq!(code, 1);
    assert!(err.contains("no token on standard input"), "{err}");
    let (code, _, err) = run_with(&dir, &["token", "inspect", "not-a-token"], &[]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("warning") && err.contains("`ps`") && err.contains("history"),
        "{err}"
    );
}

/// Issue 15: one clear line per error, no reason given twice; a data path naming a file says
/// so instead of "File exists".
#[tokio::test]
async fn errors_are_one_line_and_a_data_path_naming_a_file_says_so() {
    let dir = TempDir::new();
    migrate(&dir).await;
    let (code, _, err) = run_stdin(&dir, &["token", "inspect"], "not-a-token\n").await;
    assert_eq!(code, 1);
    let error: Vec<_> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(error, ["tessera: error: token is malformed"], "{err}");

    std::fs::write(dir.0.join("a-file"), "").unwrap();
    for args in [
        &["migrate"][..],
        &["user", "list"][..],
        &["serve", "--listen", "127.0.0.1:0"][..],
    ] {
        let args = [&["--data", "a-file"][..], args].concat();
        let (code, _, err) = run_with(&dir, &args, &[]).await;
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains("the data directory a-file is a file, not a directory"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("File exists"), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}

/// Issue 15: `audit --limit 0` prints no event (it printed one); `--kind` takes only the kinds
/// that exist and lists them when given another.
#[tokio::test]
async fn audit_limit_zero_prints_nothing_and_a_bogus_kind_lists_the_kinds() {
    let dir = TempDir::new();
    migrate(&dir).await;
    add_user(&dir, "bob", "bobs password 1", &[]).await;
    add_user(&dir, "eve", "eves password 1", &[]).await;
    let (code, out, _) = run_with(&dir, &["audit", "--limit", "0", "--no-header"], &[]).await;
    assert_eq!((code, out.as_str()), (0, ""));
    let (_, out, _) = run_with(&dir, &["audit", "--limit", "0", "--json"], &[]).await;
    assert_eq!(parse_json(&out), json!([]));
    let (_, out, _) = run_with(&dir, &["audit", "--limit", "1", "--no-header"], &[]).await;
    assert_eq!(out.lines().count(), 1, "{out}");
    let (code, _, err) = run_with(&dir, &["audit", "--kind", "bogus"], &[]).await;
    assert_eq!(code, 2, "{err}");
    for kind in ["login.failed", "user.disabled", "key.rotated", "bogus"] {
        assert!(err.contains(kind), "{kind}: {err}");
    }
    let args = ["audit", "--kind", "user.created", "--no-header"];
    let (_, out, _) = run_with(&dir, &args, &[]).await;
    assert_eq!(out.lines().count(), 2, "{out}");
}

/// Issue 15: help does not echo `TESSERA_CONFIG` (nor its value) on every subcommand, and
/// points to the configuration reference.
#[tokio::test]
async fn help_points_to_the_config_reference_without_echoing_the_environment() {
    let dir = TempDir::new();
    let env = [("TESSERA_CONFIG", "/somewhere/private.toml")];
    for args in [
        &["--help"][..],
        &["serve", "--help"][..],
        &["user", "show", "--help"][..],
    ] {
        let (code, out, err) = run_with(&dir, args, &env).await;
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(!out.contains("private.toml"), "{args:?}: {out}");
        assert!(!out.contains("(env: TESSERA_CONFIG)"), "{args:?}: {out}");
        assert!(!out.contains("TESSERA_CONFIG="), "{args:?}: {out}");
        assert!(out.contains("[env: TESSERA_CONFIG]"), "{args:?}: {out}");
        if args[0] != "user" {
            assert!(out.contains("tessera config defaults"), "{args:?}: {out}");
        }
    }
}

/// A `tessera serve` whose every stderr line is kept, ready when its port accepts.
struct Logged {
    child: Child,
    port: u16,
    reader: tokio::task::JoinHandle<Vec<String>>,
}

impl Logged {
    async fn start(dir: &TempDir, env: &[(&str, &str)], extra: &[&str]) -> Logged {
        let port = spare_port();
        let mut child = tessera(dir)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let reader = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                seen.push(line);
            }
            seen
        });
        let ready = async {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), ready)
            .await
            .expect("tessera listens in time");
        Logged {
            child,
            port,
            reader,
        }
    }

    /// Stops the server with SIGTERM, as a service manager does; its exit code and log.
    async fn stop(mut self) -> (Option<i32>, Vec<String>) {
        let pid = self.child.id().unwrap();
        let kill = std::process::Command::new("sh")
            .args(["-c", &format!("kill -TERM {pid}")])
            .status()
            .unwrap();
        assert!(kill.success());
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("tessera stops in time")
            .unwrap();
        (status.code(), self.reader.await.unwrap())
    }
}

/// Issue 15: the filter the README documents gives the access log alone, one event per
/// request, whatever else logs.
#[tokio::test]
async fn the_documented_access_log_filter_gives_the_access_log_alone() {
    let dir = TempDir::new();
    migrate(&dir).await;
    add_user(&dir, "bob", "bobs password 1", &[]).await;
    let env = [
        ("RUST_LOG", "tessera::access=debug"),
        ("TESSERA_LOG_FORMAT", "json"),
    ];
    let server = Logged::start(&dir, &env, &[]).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{}", server.port);
    for path in ["/healthz", "/nowhere"] {
        client.get(format!("{base}{path}")).send().await.unwrap();
    }
    let (status, _) = login(server.port, "bob", "wrong password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (code, log) = server.stop().await;
    assert_eq!(code, Some(0), "{log:#?}");
    let events: Vec<serde_json::Value> = log.iter().map(|l| parse_json(l)).collect();
    assert!(
        events.iter().all(|e| e["target"] == "tessera::access"),
        "the access log alone: {log:#?}"
    );
    let requests: Vec<_> = events
        .iter()
        .map(|e| (e["route"].as_str().unwrap(), e["status"].as_u64().unwrap()))
        .collect();
    assert!(requests.contains(&("/healthz", 200)), "{requests:?}");
    assert!(requests.contains(&("unmatched", 404)), "{requests:?}");
    assert!(requests.contains(&("/v1/login", 401)), "{requests:?}");
}

/// Issue 15: `RUST_LOG=debug` logs the HTTP/2 and TLS libraries' frames; the documented
/// `info,tessera=debug` gives tessera's own debug events (the access log among them) only.
#[tokio::test]
async fn the_documented_debug_filter_keeps_http2_and_tls_internals_out() {
    let dir = TempDir::new();
    migrate(&dir).await;
    add_user(&dir, "bob", "bobs password 1", &[]).await;
    let mut targets_by_filter = Vec::new();
    for filter in ["debug", "info,tessera=debug"] {
        let env = [("RUST_LOG", filter), ("TESSERA_LOG_FORMAT", "json")];
        let server = Logged::start(&dir, &env, &["--tls-self-signed"]).await;
        // Self-signed certificate; ALPN picks HTTP/2.
        let client = reqwest::Client::builder()
            .tls_danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        let response = client
            .get(format!("https://127.0.0.1:{}/healthz", server.port))
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        let (_, log) = server.stop().await;
        let targets: std::collections::BTreeSet<String> = log
            .iter()
            .map(|l| parse_json(l)["target"].as_str().unwrap().to_owned())
            .collect();
        targets_by_filter.push(targets);
    }
    let flooded = &targets_by_filter[0];
    assert!(
        flooded.iter().any(|t| t.starts_with("h2"))
            && flooded.iter().any(|t| t.starts_with("rustls")),
        "RUST_LOG=debug logs the libraries: the check is not vacuous: {flooded:?}"
    );
    let quiet = &targets_by_filter[1];
    assert!(quiet.contains("tessera::access"), "{quiet:?}");
    assert!(
        quiet.iter().all(|t| t.starts_with("tessera")),
        "tessera's events only: {quiet:?}"
    );
}

/// Issue 15: a clean shutdown (SIGTERM) logs no warning, on the embedded store and on
/// PostgreSQL, whose event bus runs a task of its own.
#[tokio::test]
async fn a_clean_shutdown_logs_no_warning() {
    let sqlite = TempDir::new();
    migrate(&sqlite).await;
    add_user(&sqlite, "bob", "bobs password 1", &[]).await;
    let database = tessera_store::conformance::test_service_url("TESSERA_TEST_DATABASE_URL");
    let schema = match &database {
        Some(url) => Some(
            tessera_store_postgres::TestSchema::create(url)
                .await
                .unwrap(),
        ),
        None => None,
    };
    let postgres = TempDir::new();
    let mut runs = vec![(&sqlite, Vec::new())];
    if let Some(schema) = &schema {
        let env = vec![
            ("TESSERA_STORE", schema.url()),
            (
                "TESSERA_MASTER_KEY",
                "dGVzc2VyYS10ZXN0LW1hc3Rlci1rZXktMzItYnl0ZXM",
            ),
            ("TESSERA_ADMIN_PASSWORD", "admin password 1"),
        ];
        runs.push((&postgres, env));
    }
    for (dir, env) in runs {
        // Several times: the warning came from a race at shutdown.
        for _ in 0..3 {
            let server = Logged::start(dir, &env, &[]).await;
            let client = reqwest::Client::new();
            client
                .get(format!("http://127.0.0.1:{}/readyz", server.port))
                .send()
                .await
                .unwrap();
            let (code, log) = server.stop().await;
            assert_eq!(code, Some(0), "{log:#?}");
            assert!(
                log.iter().any(|l| l.contains("tessera stopped")),
                "{log:#?}"
            );
            // From the signal on: the start-up notices (a first admin) are warnings by design.
            let shutdown = log.iter().skip_while(|l| !l.contains("shutdown requested"));
            let warnings: Vec<_> = shutdown
                .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("bus closed"))
                .collect();
            assert!(warnings.is_empty(), "{log:#?}");
        }
    }
}

/// Issue 16: an operator sees a user's second factors and resets them (a lost phone).
#[tokio::test]
async fn a_users_factors_are_shown_and_reset_from_the_command_line() {
    let dir = TempDir::new();
    migrate(&dir).await;
    let password = "bobs password 1";
    add_user(&dir, "bob", password, &[]).await;
    let (mut child, port, _) = serve(&dir, &[]).await;
    let base = format!("http://127.0.0.1:{port}");
    let (_, body) = login(port, "bob", password).await;
    let token = body["access_token"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    let enrolment: serde_json::Value = http
        .post(format!("{base}/v1/factors/totp"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uri = enrolment["uri"].as_str().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code = crate::factors::code_at(uri, i64::try_from(now).unwrap()).await;
    let confirmed = http
        .post(format!("{base}/v1/factors/totp/confirm"))
        .bearer_auth(&token)
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), StatusCode::OK);
    assert_eq!(
        login(port, "bob", password).await.0,
        StatusCode::UNAUTHORIZED,
        "a code is needed"
    );

    let (code, out, err) = run_with(&dir, &["user", "factors", "bob", "--json"], &[]).await;
    assert_eq!(code, 0, "{err}");
    let factors = parse_json(&out);
    assert_eq!(factors["totp"], "confirmed");
    assert_eq!(factors["recovery_codes_left"], 10);

    let (code, out, err) = run_with(&dir, &["user", "reset-factors", "bob"], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("removed the second factors of bob"), "{out}");
    assert_eq!(
        verify(port, &token).await,
        StatusCode::UNAUTHORIZED,
        "sessions revoked"
    );
    assert_eq!(
        login(port, "bob", password).await.0,
        StatusCode::OK,
        "the password alone again"
    );
    let (_, out, _) = run_with(&dir, &["user", "factors", "bob", "--json"], &[]).await;
    assert_eq!(parse_json(&out)["totp"], "none");
    let (code, _, err) = run_with(&dir, &["user", "reset-factors", "nobody"], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no user \"nobody\""), "{err}");
    child.kill().await.unwrap();
    let (_, out, _) = run_with(&dir, &["audit", "--kind", "factor.removed", "--json"], &[]).await;
    let events = parse_json(&out);
    assert_eq!(events[0]["actor"], "cli");
    assert_eq!(events[0]["subject"], "bob");
}
