//! Starting the server and pointing commands at a store, as an operator meets them: what is
//! created, when, and what is said about it.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::cli::{serve, tessera};
use crate::external::spare_port;
use crate::support::TempDir;

/// A PostgreSQL schema of the test's own (dropped afterwards); `.ci/run` sets the database.
async fn test_schema() -> tessera_store_postgres::TestSchema {
    let Ok(url) = std::env::var("TESSERA_TEST_DATABASE_URL") else {
        panic!("TESSERA_TEST_DATABASE_URL is set by .ci/run");
    };
    tessera_store_postgres::TestSchema::create(&url)
        .await
        .unwrap()
}

/// Runs `tessera serve` in `dir` with `env` until it says it is listening, stops it, and
/// returns what it wrote on stderr up to then.
async fn start_up_lines(dir: &TempDir, env: &[(&str, &str)]) -> Vec<String> {
    let port = spare_port();
    let mut child = tessera(dir)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let started = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line.contains("listening on");
            seen.push(line);
            if done {
                return;
            }
        }
    })
    .await;
    child.kill().await.unwrap();
    assert!(started.is_ok(), "tessera did not start: {seen:?}");
    seen
}

#[tokio::test]
async fn a_start_that_cannot_bind_creates_nothing_and_prints_no_password() {
    let dir = TempDir::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let out = tessera(&dir)
        .args(["serve", "--listen", &listen])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot serve on"), "{stderr}");
    assert!(
        !stderr.contains("password"),
        "no password on a failed start: {stderr}"
    );
    assert!(
        !dir.0.join("tessera-data").exists(),
        "no store, key or user was created"
    );
}

#[tokio::test]
async fn the_start_up_line_names_version_store_algorithm_and_config() {
    let dir = TempDir::new();
    let (mut child, port, stderr) = serve(&dir, &[]).await;
    let line = stderr.last().unwrap();
    assert!(
        line.contains(&format!("listening on http://127.0.0.1:{port}")),
        "{line}"
    );
    assert!(
        line.contains(&format!("version={}", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    assert!(
        line.contains("store=SQLite ./tessera-data/tessera.db"),
        "{line}"
    );
    assert!(line.contains("algorithm=EdDSA"), "{line}");
    assert!(line.contains("config=(none)"), "{line}");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn the_start_up_line_never_shows_a_store_password() {
    let schema = test_schema().await;
    let mut with_password = url::Url::parse(schema.url()).unwrap();
    // Trust authentication ignores the password; it must still never be printed.
    with_password.set_password(Some("s3cret-pw")).unwrap();
    let dir = TempDir::new();
    let seen = start_up_lines(
        &dir,
        &[
            ("TESSERA_STORE", with_password.as_str()),
            (
                "TESSERA_MASTER_KEY",
                "5sOKMLCgGZCCWk1Ws7wOqx0dS1tLXSnHmfCgS4l3sXo",
            ),
        ],
    )
    .await;
    let all = seen.join("\n");
    assert!(all.contains("store=PostgreSQL postgres://"), "{all}");
    assert!(!all.contains("s3cret-pw"), "{all}");
}

#[tokio::test]
async fn admin_commands_refuse_to_create_a_store_and_name_the_one_they_use() {
    let dir = TempDir::new();
    let out = tessera(&dir).args(["user", "list"]).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no tessera store here"), "{stderr}");
    assert!(stderr.contains("tessera-data/tessera.db"), "{stderr}");
    assert!(
        !dir.0.join("tessera-data").exists(),
        "nothing was created in the wrong directory"
    );

    // `migrate` creates the store; then the same command works and says which store it used.
    let migrate = tessera(&dir).arg("migrate").output().await.unwrap();
    assert!(migrate.status.success());
    let out = tessera(&dir).args(["user", "list"]).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("store: SQLite ./tessera-data/tessera.db"),
        "{stderr}"
    );
}

#[tokio::test]
async fn json_logs_carry_the_first_start_notices_as_json() {
    let dir = TempDir::new();
    let events: Vec<Value> = start_up_lines(&dir, &[("TESSERA_LOG_FORMAT", "json")])
        .await
        .iter()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"))
        })
        .collect();
    let messages: Vec<&str> = events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("generated a master key")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("created user \"admin\" with password: ")),
        "{messages:?}"
    );
}

#[tokio::test]
async fn admin_commands_refuse_to_create_a_postgresql_schema() {
    let schema = test_schema().await;
    let dir = TempDir::new();
    // `tessera ARGS` on the schema: its exit code and stderr.
    let run = |args: &'static [&'static str]| {
        let mut command = tessera(&dir);
        command.args(args).env("TESSERA_STORE", schema.url()).env(
            "TESSERA_MASTER_KEY",
            "5sOKMLCgGZCCWk1Ws7wOqx0dS1tLXSnHmfCgS4l3sXo",
        );
        async move {
            let out = command.output().await.unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (code, stderr) = run(&["user", "list"]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no tessera store here"), "{stderr}");
    assert!(stderr.contains("PostgreSQL postgres://"), "{stderr}");
    let store = tessera_store_postgres::PgStore::connect(schema.url())
        .await
        .unwrap();
    assert!(!store.has_schema().await.unwrap(), "no table was created");

    // `migrate` creates it; then the command works on it.
    let (code, stderr) = run(&["migrate"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(store.has_schema().await.unwrap());
    let (code, stderr) = run(&["user", "list"]).await;
    assert_eq!(code, Some(0), "{stderr}");
}
