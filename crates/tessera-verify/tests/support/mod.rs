//! What the tests of tessera-verify share: a real tessera started in-process, a manual clock,
//! and ways to call a router.

#![allow(dead_code)] // Each test file uses its own part.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use tessera_verify::Clock;
use tower_service::Service;

/// A clock the tests move.
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn at(now: i64) -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicI64::new(now)))
    }
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Serves `router` on a loopback port; returns its base URL.
pub async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

/// Sends `request` to `router` without a socket.
pub async fn call(router: &Router, request: Request<Body>) -> (StatusCode, Value, Response) {
    let response = router.clone().call(request).await.unwrap();
    let status = response.status();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value, Response::from_parts(parts, Body::empty()))
}

pub fn get_with(path: &str, authorization: Option<&str>, cookie: Option<&str>) -> Request<Body> {
    let mut request = Request::get(path);
    if let Some(token) = authorization {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    request.body(Body::empty()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// A real tessera issues the tokens.

pub const PASSWORD: &str = "correct horse battery";

/// A tessera server started in-process, with users alice (editor, reports:read) and root
/// (admin). Returns its base URL and the guard that stops it.
pub async fn tessera() -> (String, TempDir, tokio::sync::oneshot::Sender<()>) {
    tessera_with(|_| {}).await
}

/// [`tessera`] with its configuration changed by `tweak`.
pub async fn tessera_with(
    tweak: impl FnOnce(&mut tessera_server::Config),
) -> (String, TempDir, tokio::sync::oneshot::Sender<()>) {
    use tessera_server::service::Actor;
    let dir = TempDir::new();
    let mut config = tessera_server::Config {
        data: dir.0.join("data"),
        listen: "127.0.0.1:0".into(),
        argon2_memory_kib: 64,
        argon2_iterations: 1,
        ..tessera_server::Config::default()
    };
    tweak(&mut config);
    let server = tessera_server::Builder::new(config).build().await.unwrap();
    let service = Arc::clone(server.service());
    let users = [
        (
            "alice",
            vec!["editor".to_owned()],
            vec!["reports:read".to_owned()],
        ),
        ("root", vec!["admin".to_owned()], vec![]),
    ];
    for (name, roles, permissions) in users {
        service
            .create_user(&Actor::cli(), name, PASSWORD, roles, permissions)
            .await
            .unwrap();
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        server
            .serve(
                move |addr| {
                    let _ = bound_tx.send(addr);
                },
                async move {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap();
    });
    let addr: SocketAddr = bound_rx.await.unwrap();
    (format!("http://{addr}"), dir, stop)
}

/// A directory of its own, removed afterwards.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "tessera-verify-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        TempDir(dir)
    }
}

pub static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Logs in through tessera's HTTP API and returns the bearer access token (a JWT).
pub async fn login(base: &str, username: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/login"))
        .json(&json!({ "username": username, "password": PASSWORD, "delivery": "bearer" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}
