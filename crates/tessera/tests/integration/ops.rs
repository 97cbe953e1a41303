//! Operations: metrics, health, connection timeouts, panic containment, graceful shutdown,
//! log hygiene and the OpenAPI document.
//!
//! Tests that read counters run the real binary, so the process-wide metrics recorder holds
//! only their own traffic and deltas are exact.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_server::http::{HttpSettings, ProblemCode, protect};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::external::spare_port;
use crate::support::{PASSWORD, TempDir, TestServer, problem_code, serve_router, test_config};

const BIN: &str = env!("CARGO_BIN_EXE_tessera");

// ------------------------------------------------------------------ the real binary

/// A `tessera serve` process; its stderr is collected line by line.
struct Served {
    child: Child,
    base: String,
    addr: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Reads stderr to its end (the process's exit).
    reader: tokio::task::JoinHandle<()>,
    dir: TempDir,
}

impl Served {
    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Stops the server and returns everything it wrote on stderr, read to the end: no line
    /// written before the stop can be missed, however loaded the machine.
    async fn stop_and_read_log(mut self) -> String {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), &mut self.reader)
            .await
            .expect("stderr reaches its end once the server has exited")
            .unwrap();
        self.stderr()
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("the server is running")
    }
}

fn tessera(dir: &TempDir, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(&dir.0)
        .env_remove("TESSERA_ADMIN_PASSWORD")
        .env_remove("RUST_LOG")
        .env("TESSERA_ARGON2_MEMORY_KIB", "1024")
        .env("TESSERA_ARGON2_ITERATIONS", "1")
        .envs(env.iter().copied())
        .kill_on_drop(true);
    cmd
}

/// Creates `name` with `password` through the CLI (so `serve` creates no admin and prints
/// nothing that is not a log line).
async fn add_user(dir: &TempDir, name: &str, password: &str, roles: &[&str]) {
    if !dir.0.join("tessera-data").exists() {
        let created = tessera(dir, &[]).arg("migrate").output().await.unwrap();
        assert!(created.status.success(), "migrate");
    }
    let mut cmd = tessera(dir, &[]);
    cmd.args(["user", "add", name, "--password-stdin"]);
    for role in roles {
        cmd.args(["--role", role]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{password}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    assert!(child.wait().await.unwrap().success(), "user add {name}");
}

/// Starts `tessera serve` in `dir` and waits until it listens.
async fn serve(dir: TempDir, env: &[(&str, &str)], extra: &[&str]) -> Served {
    let port = spare_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = tessera(&dir, env)
        .args(["serve", "--listen", &listen])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let collected = Arc::clone(&stderr);
    let reader = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        while let Ok(Some(line)) = lines.next_line().await {
            let listening = line.contains("listening on");
            collected.lock().unwrap().push(line);
            if listening && let Some(tx) = ready.take() {
                let _ = tx.send(());
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), ready_rx)
        .await
        .expect("tessera listens in time")
        .unwrap_or_else(|_| panic!("tessera exited: {}", stderr.lock().unwrap().join("\n")));
    let scheme = if extra.contains(&"--tls-self-signed") {
        "https"
    } else {
        "http"
    };
    Served {
        child,
        base: format!("{scheme}://{listen}"),
        addr: listen.parse().unwrap(),
        stderr,
        reader,
        dir,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn login(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    pw: &str,
    delivery: &str,
) -> reqwest::Response {
    client
        .post(format!("{base}/v1/login"))
        .json(&json!({ "username": user, "password": pw, "delivery": delivery }))
        .send()
        .await
        .unwrap()
}

fn cookie_of(response: &reqwest::Response) -> String {
    crate::support::set_cookie(response).expect("a session cookie")
}

// ------------------------------------------------------------------ Prometheus parsing

/// Parses Prometheus text with the reference Python client's parser (which rejects malformed
/// exposition) and returns every sample as `name{label="value",…}` → value.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (bash .ci/run installs prometheus-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the Prometheus parser rejected /metrics: {}\n---\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let samples: Vec<(String, BTreeMap<String, String>, f64)> =
        serde_json::from_slice(&output.stdout).unwrap();
    samples
        .into_iter()
        .map(|(name, labels, value)| {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            let key = if labels.is_empty() {
                name
            } else {
                format!("{name}{{{}}}", labels.join(","))
            };
            (key, value)
        })
        .collect()
}

async fn scrape(client: &reqwest::Client, base: &str) -> (String, BTreeMap<String, f64>) {
    let response = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    let samples = parse_prometheus(&text);
    (text, samples)
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, key: &str) -> f64 {
    after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_logins_verifies_and_failures() {
    let dir = TempDir::new();
    let user = "zelda-operator";
    let password = "metrics password 1";
    add_user(&dir, user, password, &[]).await;
    // Grace 0: a repeated refresh is a replay at once.
    let server = serve(dir, &[("TESSERA_REFRESH_GRACE", "0")], &[]).await;
    let base = server.base.clone();
    let http = client();
    let (_, before) = scrape(&http, &base).await;

    let cookie_login = login(&http, &base, user, password, "cookie").await;
    assert_eq!(cookie_login.status(), StatusCode::OK);
    let cookie = cookie_of(&cookie_login);
    let bearer: Value = login(&http, &base, user, password, "bearer")
        .await
        .json()
        .await
        .unwrap();
    let access = bearer["access_token"].as_str().unwrap().to_owned();
    let refresh = bearer["refresh_token"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        // An unknown name, so `user`'s own throttling counters stay untouched.
        let wrong = login(&http, &base, "nobody-at-all", "not the password", "cookie").await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    let verify = |auth: Option<(&str, String)>, query: &str| {
        let mut request = http.get(format!("{base}/v1/verify{query}"));
        if let Some((name, value)) = auth {
            request = request.header(name, value);
        }
        request.send()
    };
    for _ in 0..3 {
        let ok = verify(Some(("cookie", format!("__Host-tessera={cookie}"))), "")
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
    }
    assert_eq!(
        verify(None, "").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let garbage = verify(Some(("authorization", "Bearer nonsense".into())), "")
        .await
        .unwrap();
    assert_eq!(problem_code(garbage).await, "invalid_token");
    let forbidden = verify(
        Some(("cookie", format!("__Host-tessera={cookie}"))),
        "?role=admin",
    )
    .await
    .unwrap();
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);

    let refresh_body = json!({ "refresh_token": refresh });
    let first = http
        .post(format!("{base}/v1/refresh"))
        .json(&refresh_body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    // Inclusive window of 0 s: one second later the repeat is a replay.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let replay = http
        .post(format!("{base}/v1/refresh"))
        .json(&refresh_body)
        .send()
        .await
        .unwrap();
    assert_eq!(problem_code(replay).await, "token_revoked");

    // A store outage: another connection holds SQLite's write lock, so the login's first write
    // (counting the attempt, before its password is checked) fails after the busy timeout and
    // the login answers 503.
    let db = server.dir.0.join("tessera-data/tessera.db");
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let outage = login(&http, &base, user, password, "cookie").await;
    assert_eq!(problem_code(outage).await, "store_unavailable");
    locker.execute_batch("ROLLBACK").unwrap();

    // Requests are labelled with their route's template, or `unmatched`: never the path.
    let with_id = http
        .delete(format!("{base}/v1/sessions/label-probe-id"))
        .send()
        .await
        .unwrap();
    assert_eq!(with_id.status(), StatusCode::UNAUTHORIZED);
    let nowhere = http
        .get(format!("{base}/v1/label-probe-nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(nowhere.status(), StatusCode::NOT_FOUND);

    // The active-session gauge is recomputed at most once a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (text, after) = scrape(&http, &base).await;
    let d = |key: &str| delta(&before, &after, key);
    assert_eq!(
        d(r#"tessera_logins_total{outcome="success"}"#),
        2.0,
        "{text}"
    );
    assert_eq!(
        d(r#"tessera_logins_total{outcome="invalid_credentials"}"#),
        2.0
    );
    assert_eq!(
        d(r#"tessera_logins_total{outcome="store_unavailable"}"#),
        1.0
    );
    assert_eq!(d(r#"tessera_verify_total{outcome="allowed"}"#), 3.0);
    assert_eq!(d(r#"tessera_verify_total{outcome="unauthenticated"}"#), 1.0);
    assert_eq!(d(r#"tessera_verify_total{outcome="invalid_token"}"#), 1.0);
    assert_eq!(d(r#"tessera_verify_total{outcome="forbidden"}"#), 1.0);
    assert_eq!(
        d(r#"tessera_verify_duration_seconds_count{outcome="allowed"}"#),
        3.0
    );
    assert_eq!(
        d(r#"tessera_verify_duration_seconds_bucket{le="+Inf",outcome="allowed"}"#),
        3.0
    );
    assert!(d(r#"tessera_verify_duration_seconds_sum{outcome="allowed"}"#) > 0.0);
    assert_eq!(d("tessera_refresh_replays_total"), 1.0);
    assert_eq!(
        d(r#"tessera_store_errors_total{kind="unavailable",operation="hit_counter"}"#),
        1.0
    );
    assert!(d(r#"tessera_store_operation_duration_seconds_count{operation="hit_counter"}"#) >= 5.0);
    assert!(
        d(r#"tessera_store_operation_duration_seconds_count{operation="create_session"}"#) >= 2.0
    );
    assert_eq!(
        d(r#"tessera_http_requests_total{method="POST",route="/v1/login",status="200"}"#),
        2.0
    );
    assert_eq!(
        d(r#"tessera_http_requests_total{method="POST",route="/v1/refresh",status="401"}"#),
        1.0
    );
    assert_eq!(
        d(r#"tessera_http_requests_total{method="DELETE",route="/v1/sessions/{id}",status="401"}"#),
        1.0
    );
    assert_eq!(
        d(r#"tessera_http_requests_total{method="GET",route="unmatched",status="404"}"#),
        1.0
    );
    assert!(!text.contains("label-probe"), "{text}");
    // The cookie session lives; the bearer session was revoked by the replay.
    assert_eq!(after["tessera_active_sessions"], 1.0);
    assert_eq!(after[r#"tessera_build_info{version="0.1.0"}"#], 1.0);

    // No user name, password, token or cookie in any label or value.
    for secret in [user, password, &cookie, &access, &refresh] {
        assert!(!text.contains(secret), "/metrics contains {secret:?}");
    }
}

// ------------------------------------------------------------------ health

#[tokio::test]
async fn health_and_readiness_report_the_store_and_the_keys() {
    let server = TestServer::start().await;
    let health = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({ "status": "ok" })
    );
    let ready = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(
        ready.json::<Value>().await.unwrap(),
        json!({ "status": "ready", "checks": { "store": "ok", "keys": "ok" } })
    );
    assert!(server.service.key_ring().self_check());
}

// ------------------------------------------------------------------ timeouts

/// Reads from `stream` until the server closes it (EOF or reset); returns what was read and
/// how long it took. Fails when the server keeps it open longer than `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Err(_) => panic!(
                "the server kept the connection open for {limit:?}; got {:?}",
                String::from_utf8_lossy(&received)
            ),
            Ok(Ok(0) | Err(_)) => return (received, started.elapsed()),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_trickled_request_head_is_cut_off_at_the_header_read_timeout() {
    let server = TestServer::start_with(|c| c.header_read_timeout = Duration::from_secs(1)).await;
    // A complete request on a fresh connection is answered.
    let mut good = TcpStream::connect(server.addr).await.unwrap();
    good.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_until_closed(&mut good, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // Slowloris on a fresh connection, and on the second request of a kept-alive one: the head
    // never completes, though a header line arrives every 300 ms.
    let fresh = TcpStream::connect(server.addr).await.unwrap();
    assert_trickled_head_is_cut_off(fresh).await;
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let first = read_one_response(&mut kept).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert_trickled_head_is_cut_off(kept).await;
}

/// Reads one HTTP/1.1 response with a `content-length` body.
async fn read_one_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "closed before a whole response");
        received.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .expect("content-length")
                .trim()
                .parse()
                .unwrap();
            if received.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

/// Starts a request head on `stream` and trickles header lines; the server must close the
/// connection, without an answer, about one second (the header read timeout) later.
async fn assert_trickled_head_is_cut_off(mut stream: TcpStream) {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for i in 0..30 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if writer
                .write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(6), reader.read(&mut buf)).await;
    let elapsed = started.elapsed();
    trickle.abort();
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "the connection is closed, without an answer: {read:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(800) && elapsed < Duration::from_secs(4),
        "closed after {elapsed:?}, expected about 1 s"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let server = TestServer::start_with(|c| c.header_read_timeout = Duration::from_secs(1)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    // The response arrives, then the connection stays silent until the server closes it.
    let (received, elapsed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with(r#"{"status":"ok"}"#),
        "one complete response: {text}"
    );
    assert!(
        elapsed >= Duration::from_millis(800),
        "closed after {elapsed:?}"
    );
}

/// The client's opening of an HTTP/2 connection without TLS (prior knowledge): the preface
/// and an empty SETTINGS frame.
const H2_OPENING: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// A HEADERS frame on stream 1 asking `GET /healthz`, ending the stream (HPACK: the static
/// table's `:method GET` and `:scheme http`, `:path` and `:authority` as literals).
fn h2_get_healthz() -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04, 8];
    block.extend_from_slice(b"/healthz");
    block.extend_from_slice(&[0x01, 9]);
    block.extend_from_slice(b"localhost");
    let mut frame = vec![
        0,
        0,
        u8::try_from(block.len()).unwrap(),
        0x01,
        0x05,
        0,
        0,
        0,
        1,
    ];
    frame.extend_from_slice(&block);
    frame
}

#[tokio::test]
async fn an_http2_connection_without_a_request_is_closed_at_the_header_read_timeout() {
    let server = TestServer::start_with(|c| {
        c.header_read_timeout = Duration::from_secs(1);
        c.keep_alive_timeout = Duration::from_secs(30);
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(H2_OPENING).await.unwrap();
    let (received, elapsed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    // The server spoke HTTP/2 (its SETTINGS frame, type 4), then closed the connection.
    assert!(received.len() >= 9 && received[3] == 0x04, "{received:?}");
    assert!(
        elapsed >= Duration::from_millis(800) && elapsed < Duration::from_secs(4),
        "closed after {elapsed:?}, expected about 1 s"
    );
}

#[tokio::test]
async fn an_http2_connection_is_kept_between_requests_until_the_keep_alive_timeout() {
    // HTTP/2 multiplexes requests: the head limit applies to its first request only, so a
    // connection idle after one is closed by the idle limit, not by the head limit.
    let server = TestServer::start_with(|c| {
        c.header_read_timeout = Duration::from_secs(1);
        c.keep_alive_timeout = Duration::from_secs(3);
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut opening = H2_OPENING.to_vec();
    opening.extend_from_slice(&h2_get_healthz());
    stream.write_all(&opening).await.unwrap();
    let (received, elapsed) = read_until_closed(&mut stream, Duration::from_secs(8)).await;
    let body: &[u8] = br#"{"status":"ok"}"#;
    assert!(
        received.windows(body.len()).any(|w| w == body),
        "answered: {}",
        String::from_utf8_lossy(&received)
    );
    assert!(
        elapsed >= Duration::from_millis(2500) && elapsed < Duration::from_secs(6),
        "closed after {elapsed:?}, expected about 3 s"
    );
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_keep_alive_timeout() {
    // The head timeout is long here, so only the idle-connection timeout can close it.
    let server = TestServer::start_with(|c| {
        c.header_read_timeout = Duration::from_secs(30);
        c.keep_alive_timeout = Duration::from_secs(1);
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let (received, elapsed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(received.is_empty());
    assert!(
        elapsed >= Duration::from_millis(800) && elapsed < Duration::from_secs(4),
        "closed after {elapsed:?}"
    );
}

#[tokio::test]
async fn a_trickled_body_gets_408_at_the_body_read_timeout() {
    let server = TestServer::start_with(|c| c.body_read_timeout = Duration::from_secs(1)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            b"POST /v1/login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"username\":",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let (received, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
    assert!(text.contains(r#""code":"request_timeout""#), "{text}");
    assert!(
        elapsed >= Duration::from_millis(800) && elapsed < Duration::from_secs(4),
        "answered after {elapsed:?}"
    );
}

// ------------------------------------------------------------------ panics

#[tokio::test]
async fn a_panicking_handler_answers_500_and_the_server_carries_on() {
    use axum::routing::get;
    let config = test_config();
    let router = axum::Router::new()
        .route(
            "/boom",
            get(|| async {
                if true {
                    panic!("secret detail of the panic");
                }
                "unreachable"
            }),
        )
        .route("/fine", get(|| async { "fine" }));
    let app = protect(
        router,
        Arc::new(HttpSettings::from_config(&config)),
        ["/boom", "/fine"],
    );
    let (addr, _stop) = serve_router(config, app).await;
    let http = client();
    for _ in 0..3 {
        let boom = http
            .get(format!("http://{addr}/boom"))
            .send()
            .await
            .unwrap();
        assert_eq!(boom.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(boom.headers()["cache-control"], "no-store");
        let body = boom.text().await.unwrap();
        assert!(!body.contains("secret detail"), "{body}");
        let problem: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["code"], "internal_error");
        let fine = http
            .get(format!("http://{addr}/fine"))
            .send()
            .await
            .unwrap();
        assert_eq!(fine.status(), StatusCode::OK);
        assert_eq!(fine.text().await.unwrap(), "fine");
    }
}

// ------------------------------------------------------------------ graceful shutdown

/// What one load request ended with.
#[derive(Debug)]
enum Outcome {
    /// A whole response (status and body).
    Answered(u16),
    /// The response started but its body was cut.
    Cut(String),
    /// No response at all (refused or closed before an answer).
    Failed(String),
}

#[tokio::test]
async fn sigterm_under_load_drains_in_flight_requests_and_exits_zero() {
    let dir = TempDir::new();
    add_user(&dir, "loader", PASSWORD, &[]).await;
    // The load's failing logins must not trip login throttling, which would refuse the
    // in-flight logins this test watches (throttling has tests of its own).
    let unthrottled = [
        ("TESSERA_LOGIN_MAX_FAILURES", "1000000"),
        ("TESSERA_LOGIN_MAX_FAILURES_PER_ADDRESS", "1000000"),
        ("TESSERA_LOGIN_MAX_FAILURES_GLOBAL", "1000000"),
    ];
    let mut server = serve(dir, &unthrottled, &[]).await;
    let base = server.base.clone();
    let http = client();
    let cookie = cookie_of(&login(&http, &base, "loader", PASSWORD, "cookie").await);

    // Load: workers loop over verify, session and failing logins until shutdown stops them.
    let results: Arc<Mutex<Vec<(Instant, Instant, Outcome)>>> = Arc::default();
    let mut workers = Vec::new();
    for worker in 0..6 {
        let (base, cookie, results) = (base.clone(), cookie.clone(), Arc::clone(&results));
        workers.push(tokio::spawn(async move {
            let http = client();
            let deadline = Instant::now() + Duration::from_secs(20);
            for i in 0usize.. {
                let started = Instant::now();
                let request = match (worker + i) % 3 {
                    0 => http.get(format!("{base}/v1/verify")),
                    1 => http.get(format!("{base}/v1/session")),
                    _ => http
                        .post(format!("{base}/v1/login"))
                        .json(&json!({ "username": "loader", "password": "wrong password" })),
                };
                let request = request.header("cookie", format!("__Host-tessera={cookie}"));
                let outcome = match request.send().await {
                    Err(e) => Outcome::Failed(e.to_string()),
                    Ok(response) => {
                        let status = response.status().as_u16();
                        match response.bytes().await {
                            Ok(_) => Outcome::Answered(status),
                            Err(e) => Outcome::Cut(e.to_string()),
                        }
                    }
                };
                let failed = matches!(outcome, Outcome::Failed(_));
                results
                    .lock()
                    .unwrap()
                    .push((started, Instant::now(), outcome));
                if failed || Instant::now() > deadline {
                    return;
                }
            }
        }));
    }

    // In flight for sure: logins whose head was read and whose body is still arriving.
    let body = json!({ "username": "loader", "password": PASSWORD }).to_string();
    let (first_half, second_half) = body.split_at(body.len() / 2);
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(
                format!(
                    "POST /v1/login HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n{first_half}",
                    server.addr,
                    body.len()
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        slow.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(700)).await;

    let signalled = Instant::now();
    // The shell's built-in kill: no extra package or crate needed.
    let kill = std::process::Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", server.pid())])
        .status()
        .unwrap();
    assert!(kill.success());

    // New connections are refused while the in-flight logins are still open.
    let refused_by = Instant::now() + Duration::from_secs(3);
    loop {
        if TcpStream::connect(server.addr).await.is_err() {
            break;
        }
        assert!(
            Instant::now() < refused_by,
            "the listener still accepts after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The in-flight logins complete normally.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for mut stream in slow {
        stream.write_all(second_half.as_bytes()).await.unwrap();
        let (received, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&received);
        assert!(
            text.starts_with("HTTP/1.1 200"),
            "an in-flight login was answered: {text}"
        );
        assert!(
            text.to_ascii_lowercase()
                .contains("set-cookie: __host-tessera=tsr_"),
            "{text}"
        );
    }

    let status = tokio::time::timeout(Duration::from_secs(15), server.child.wait())
        .await
        .expect("the server exits after draining")
        .unwrap();
    let exit_after = signalled.elapsed();
    for worker in workers {
        worker.await.unwrap();
    }
    let stderr = server.stderr();
    assert_eq!(status.code(), Some(0), "exit status; stderr:\n{stderr}");
    assert!(
        exit_after < Duration::from_secs(8),
        "drained without the forced cut-off: {exit_after:?}"
    );
    assert!(stderr.contains("shutdown requested"), "{stderr}");
    assert!(stderr.contains("all connections closed"), "{stderr}");
    assert!(!stderr.contains("panic"), "{stderr}");

    let results = results.lock().unwrap();
    let answered_before = results
        .iter()
        .filter(|(_, ended, o)| *ended < signalled && matches!(o, Outcome::Answered(_)))
        .count();
    let answered_after = results
        .iter()
        .filter(|(_, ended, o)| *ended >= signalled && matches!(o, Outcome::Answered(_)))
        .count();
    let failed = results
        .iter()
        .filter(|(_, _, o)| matches!(o, Outcome::Failed(_)))
        .count();
    eprintln!(
        "load: {answered_before} answered before SIGTERM, {answered_after} after, {failed} \
         refused or closed; exit {exit_after:?} after the signal"
    );
    assert!(
        answered_before >= 20,
        "the load ran: {answered_before} answers"
    );
    for (started, ended, outcome) in results.iter() {
        match outcome {
            Outcome::Answered(status) => {
                assert!(*status < 500, "a {status} under shutdown")
            }
            Outcome::Cut(error) => panic!("a response was cut off: {error}"),
            // Only requests that met the closing server may fail: never one that completed
            // before the signal.
            Outcome::Failed(error) => assert!(
                *ended >= signalled,
                "a request failed before SIGTERM (started {:?} before it): {error}",
                signalled.saturating_duration_since(*started)
            ),
        }
    }
}

// ------------------------------------------------------------------ log hygiene

/// Runs every flow that carries a secret and returns the secrets seen on the wire.
async fn exercise_secrets(http: &reqwest::Client, base: &str, user: &str) -> Vec<String> {
    let mut secrets = vec![PASSWORD.to_owned()];
    let wrong = format!("wrong-{}", tessera_core::random::id().unwrap());
    let refused = login(http, base, user, &wrong, "cookie").await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    secrets.push(wrong);

    let cookie_login = login(http, base, user, PASSWORD, "cookie").await;
    assert_eq!(cookie_login.status(), StatusCode::OK);
    let cookie = cookie_of(&cookie_login);
    let with_cookie =
        |r: reqwest::RequestBuilder| r.header("cookie", format!("__Host-tessera={cookie}"));
    assert_eq!(
        with_cookie(http.get(format!("{base}/v1/verify")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        with_cookie(http.get(format!("{base}/v1/session")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        with_cookie(http.post(format!("{base}/v1/logout")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    secrets.push(cookie.clone());

    let bearer: Value = login(http, base, user, PASSWORD, "bearer")
        .await
        .json()
        .await
        .unwrap();
    let access = bearer["access_token"].as_str().unwrap().to_owned();
    let refresh = bearer["refresh_token"].as_str().unwrap().to_owned();
    let verify = http
        .get(format!("{base}/v1/verify"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(verify.status(), StatusCode::OK);
    let rotated: Value = http
        .post(format!("{base}/v1/refresh"))
        .json(&json!({ "refresh_token": refresh }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access2 = rotated["access_token"].as_str().unwrap().to_owned();
    let refresh2 = rotated["refresh_token"].as_str().unwrap().to_owned();
    let new_password = format!("new-{}", tessera_core::random::id().unwrap());
    let changed = http
        .post(format!("{base}/v1/password"))
        .bearer_auth(&access2)
        .json(&json!({ "current_password": PASSWORD, "new_password": new_password }))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    let changed: Value = changed.json().await.unwrap();
    let access3 = changed["access_token"].as_str().unwrap().to_owned();
    let logout = http
        .post(format!("{base}/v1/logout"))
        .bearer_auth(&access3)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let refresh3 = changed["refresh_token"].as_str().unwrap().to_owned();
    secrets.extend([
        access,
        refresh,
        access2,
        refresh2,
        access3,
        refresh3,
        new_password,
    ]);
    secrets
}

/// Checks that no secret, nor a recognisable piece of one, is in `log`.
fn assert_no_secret(log: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !log.contains(secret.as_str()),
            "the log contains a secret: {secret}"
        );
        // A token's random tail (or a JWT's signature) alone is as bad as the whole.
        let tail = &secret[secret.len().saturating_sub(16)..];
        assert!(
            !log.contains(tail),
            "the log contains the end of a secret: {tail}"
        );
    }
}

#[tokio::test]
async fn trace_logs_as_text_over_tls_never_contain_passwords_tokens_or_cookies() {
    let dir = TempDir::new();
    add_user(&dir, "logged-user", PASSWORD, &[]).await;
    let server = serve(dir, &[("RUST_LOG", "trace")], &["--tls-self-signed"]).await;
    // Self-signed certificate for localhost; ALPN picks HTTP/2.
    let http = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let secrets = exercise_secrets(&http, &server.base, "logged-user").await;
    let log = server.stop_and_read_log().await;
    assert!(log.contains("TRACE"), "trace logging was on");
    assert!(
        log.contains("rustls"),
        "TLS internals were logged: the check is not vacuous"
    );
    assert!(log.contains("h2::"), "HTTP/2 internals were logged");
    assert!(
        log.contains("route=\"/v1/password\""),
        "the access log names routes"
    );
    assert_no_secret(&log, &secrets);
}

#[tokio::test]
async fn trace_logs_as_json_over_http2_never_contain_passwords_tokens_or_cookies() {
    let dir = TempDir::new();
    add_user(&dir, "logged-user", PASSWORD, &[]).await;
    let server = serve(
        dir,
        &[("RUST_LOG", "trace"), ("TESSERA_LOG_FORMAT", "json")],
        &[],
    )
    .await;
    let http = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let secrets = exercise_secrets(&http, &server.base, "logged-user").await;
    let log = server.stop_and_read_log().await;
    let mut levels = BTreeSet::new();
    let mut routes = BTreeSet::new();
    for line in log.lines() {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        levels.insert(event["level"].as_str().unwrap().to_owned());
        if let Some(route) = event["route"].as_str() {
            routes.insert(route.to_owned());
        }
    }
    assert!(
        levels.contains("TRACE") && levels.contains("INFO"),
        "{levels:?}"
    );
    assert!(
        routes.contains("/v1/refresh"),
        "structured fields: {routes:?}"
    );
    assert!(log.contains("h2::"), "HTTP/2 internals were logged");
    assert_no_secret(&log, &secrets);
}

// ------------------------------------------------------------------ OpenAPI

const METHODS: [&str; 8] = [
    "get", "head", "post", "put", "patch", "delete", "options", "trace",
];

async fn openapi(server: &TestServer) -> Value {
    let response = server
        .client
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

#[tokio::test]
async fn every_documented_operation_exists_and_other_methods_are_405() {
    let server = TestServer::start().await;
    let doc = openapi(&server).await;
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 13, "{:?}", paths.keys());
    for (path, item) in paths {
        let url = server.url(&path.replace("{id}", "some-id"));
        for method in METHODS {
            // HEAD is served wherever GET is (same status and headers, no body).
            let operation = item
                .get(method)
                .or_else(|| item.get("get").filter(|_| method == "head"));
            let request = server
                .client
                .request(method.to_uppercase().parse().unwrap(), &url);
            let response = request.send().await.unwrap();
            let status = response.status();
            match operation {
                Some(operation) => {
                    assert!(
                        status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                        "{method} {path} is documented but answers {status}"
                    );
                    let documented = &operation["responses"];
                    assert!(
                        documented.get(status.as_str()).is_some(),
                        "{method} {path} answered {status}, which is not among its documented \
                         responses {:?}",
                        documented.as_object().map(|r| r.keys().collect::<Vec<_>>())
                    );
                }
                None if method == "head" => {
                    // No body to a HEAD request, but the same status and headers.
                    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                    assert_eq!(
                        response.headers()["content-type"],
                        "application/problem+json"
                    );
                }
                None => {
                    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                    assert_eq!(problem_code(response).await, "method_not_allowed");
                }
            }
        }
    }
}

/// The paths the real router serves, read from its route table (the routes `router` wraps its
/// protective layer around). axum offers no listing, so this reads the table's `Debug` form
/// (`RouteId(n): "/path"` in `path_router`, before the fallback router's own table); the
/// checks below fail loudly should that form ever change.
fn served_paths(server: &TestServer) -> BTreeSet<String> {
    let router = tessera_server::http::unprotected_router(
        server.service.clone(),
        HttpSettings::from_config(&test_config()),
    );
    let debug = format!("{router:?}");
    let (table, _fallback) = debug
        .split_once("fallback_router:")
        .expect("the router's Debug form names its fallback router after its routes");
    let entry = regex::Regex::new(r#"RouteId\(\d+\): "([^"]+)""#).unwrap();
    let paths: BTreeSet<String> = entry
        .captures_iter(table)
        .map(|capture| capture[1].to_owned())
        .collect();
    assert!(
        paths.len() >= 13,
        "the router's route table was read: {paths:?}"
    );
    paths
}

/// Every path the router serves is in the document, and every documented path is served;
/// `every_documented_operation_exists_and_other_methods_are_405` then holds each path's
/// methods to the document in both directions.
#[tokio::test]
async fn every_route_the_router_serves_is_documented_and_no_other() {
    let server = TestServer::start().await;
    let doc = openapi(&server).await;
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let served = served_paths(&server);
    assert_eq!(
        served.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "served but not documented"
    );
    assert_eq!(
        documented.difference(&served).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "documented but not served"
    );
}

/// The document lists every problem code (`ProblemCode::ALL`, the one list the responses are
/// built from), and every code a response's description names is one of them.
#[tokio::test]
async fn every_problem_code_is_documented() {
    let server = TestServer::start().await;
    let doc = openapi(&server).await;
    let documented: Vec<&str> =
        doc["components"]["schemas"]["Problem"]["properties"]["code"]["anyOf"][0]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
    let codes: Vec<&str> = ProblemCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(documented, codes);
    for expected in [
        "invalid_credentials",
        "token_expired",
        "store_unavailable",
        "request_timeout",
    ] {
        assert!(documented.contains(&expected), "{expected}: {documented:?}");
    }
    // Descriptions of problem responses name codes in backquotes; configuration keys, query
    // parameters and role names are the only other snake_case words they quote.
    let not_codes = [
        "body_read_timeout",
        "recent_authentication",
        "aal",
        "max_age",
        "admin",
    ];
    let quoted = regex::Regex::new(r"`([a-z_]+)`").unwrap();
    let mut responses: Vec<&Value> = Vec::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            responses.extend(
                operation["responses"]
                    .as_object()
                    .into_iter()
                    .flat_map(|r| r.values()),
            );
        }
    }
    responses.extend(doc["components"]["responses"].as_object().unwrap().values());
    let mut named = BTreeSet::new();
    for response in responses {
        let is_problem = response["content"]
            .get("application/problem+json")
            .is_some()
            || response.get("$ref").is_some();
        let description = response["description"].as_str().unwrap_or("");
        for capture in quoted.captures_iter(description).filter(|_| is_problem) {
            let word = capture[1].to_owned();
            if !not_codes.contains(&word.as_str()) {
                named.insert(word);
            }
        }
    }
    assert!(named.len() >= 10, "{named:?}");
    for word in &named {
        assert!(
            codes.contains(&word.as_str()),
            "a response description names `{word}`, which is no problem code"
        );
    }
}

#[tokio::test]
async fn the_openapi_document_is_valid_openapi_3_1() {
    let server = TestServer::start().await;
    let doc = openapi(&server).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys\n\
             from openapi_spec_validator import validate\n\
             from openapi_spec_validator.validation import OpenAPIV31SpecValidator\n\
             validate(json.load(sys.stdin), cls=OpenAPIV31SpecValidator)\n",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (bash .ci/run installs openapi-spec-validator)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "openapi-spec-validator: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
