//! Test support: an in-process tessera on a loopback port with a manual clock, and an HTTP
//! client that keeps the session cookie by hand (so every cookie attribute is visible).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use tessera_core::at_rest::MasterKey;
use tessera_core::b64;
use tessera_server::builder::Stores;
use tessera_server::clock::ManualClock;
use tessera_server::config::TokenFormat;
use tessera_server::service::{Actor, Tessera};
use tessera_server::{Builder, Config};
use tessera_store::Store;
use tessera_store_sqlite::SqliteStore;
use tokio::sync::oneshot;

/// The audit events of `kind`, newest first (at most 100).
pub async fn audit_of(
    server: &TestServer,
    kind: tessera_server::service::EventKind,
) -> Vec<tessera_store::AuditEvent> {
    server
        .service
        .audit_events(tessera_store::AuditQuery {
            kind: Some(kind),
            limit: 100,
            ..tessera_store::AuditQuery::default()
        })
        .await
        .unwrap()
}

/// The details of the audit events of `kind`, oldest first.
pub async fn audit_details(
    server: &TestServer,
    kind: tessera_server::service::EventKind,
) -> Vec<String> {
    let mut events = audit_of(server, kind).await;
    events.reverse();
    events
        .into_iter()
        .map(|e| e.detail.unwrap_or_default())
        .collect()
}

/// Serves `app` with tessera's runner (transport, timeouts) on the address `config` names,
/// until the returned sender is dropped; the bound address.
pub async fn serve_router(config: Config, app: axum::Router) -> (SocketAddr, oneshot::Sender<()>) {
    let (bound_tx, bound_rx) = oneshot::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        tessera_server::serve::serve_router(
            &config,
            app,
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
    (bound_rx.await.unwrap(), stop)
}

/// A fixed start time, so expiry tests are exact.
pub const T0: i64 = 1_800_000_000;
/// Password of every test user.
pub const PASSWORD: &str = "correct horse battery";

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let name = format!("tessera-test-{}", tessera_core::random::id().unwrap());
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running server.
pub struct TestServer {
    pub base: String,
    pub addr: SocketAddr,
    pub clock: Arc<ManualClock>,
    pub service: Arc<Tessera>,
    pub client: reqwest::Client,
    _shutdown: oneshot::Sender<()>,
    _dir: TempDir,
}

/// Test configuration: fast Argon2 parameters, everything else at the defaults.
pub fn test_config() -> Config {
    Config {
        listen: "127.0.0.1:0".into(),
        argon2_memory_kib: 64,
        argon2_iterations: 1,
        role_permissions: [("editor".to_string(), vec!["docs:write".to_string()])]
            .into_iter()
            .collect(),
        ..Config::default()
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::start_custom(tweak, T0, |store| Arc::new(store)).await
    }

    /// A server whose clock starts at `start` and whose SQLite store is wrapped by `wrap`
    /// (to observe what reaches the store).
    pub async fn start_custom(
        tweak: impl FnOnce(&mut Config),
        start: i64,
        wrap: impl FnOnce(SqliteStore) -> Arc<dyn Store>,
    ) -> TestServer {
        let mut config = test_config();
        tweak(&mut config);
        TestServer::start_full(config, start, wrap).await
    }

    /// Starts a server with this configuration; only its data directory is the test's.
    pub async fn start_config(config: Config) -> TestServer {
        TestServer::start_full(config, T0, |store| Arc::new(store)).await
    }

    async fn start_full(
        mut config: Config,
        start: i64,
        wrap: impl FnOnce(SqliteStore) -> Arc<dyn Store>,
    ) -> TestServer {
        config.validate().expect("a valid test configuration");
        let dir = TempDir::new();
        config.data = dir.0.clone();
        let store = SqliteStore::open(&dir.0.join("tessera.db")).unwrap();
        let clock = Arc::new(ManualClock::new(start));
        // Assembled as the binary assembles it; only the store, clock and key are the test's.
        let server = Builder::new(config)
            .stores(Stores::local(wrap(store)))
            .master_key(MasterKey::generate().unwrap())
            .clock(clock.clone())
            .build()
            .await
            .unwrap();
        let service = Arc::clone(server.service());
        service
            .create_user(
                &Actor::cli(),
                "alice",
                PASSWORD,
                vec!["editor".into()],
                vec!["reports:read".into()],
            )
            .await
            .unwrap();
        service
            .create_user(
                &Actor::cli(),
                "admin",
                PASSWORD,
                vec!["admin".into()],
                vec![],
            )
            .await
            .unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let (bound_tx, bound_rx) = oneshot::channel();
        tokio::spawn(async move {
            server
                .serve(
                    move |addr| {
                        let _ = bound_tx.send(addr);
                    },
                    async move {
                        let _ = rx.await;
                    },
                )
                .await
                .unwrap();
        });
        let addr = bound_rx.await.unwrap();
        TestServer {
            base: format!("http://{addr}"),
            addr,
            clock,
            service,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            _shutdown: tx,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The server's SQLite database, for a second instance or the CLI to share.
    pub fn db_path(&self) -> PathBuf {
        self._dir.0.join("tessera.db")
    }

    /// Advances the server's clock.
    pub fn advance(&self, seconds: i64) {
        self.clock.advance(seconds);
    }

    pub async fn login(&self, username: &str, password: &str, delivery: &str) -> Response {
        self.client
            .post(self.url("/v1/login"))
            .json(&json!({ "username": username, "password": password, "delivery": delivery }))
            .send()
            .await
            .unwrap()
    }

    /// Logs in and returns the client-side session.
    pub async fn session(&self, username: &str, delivery: Delivery) -> ClientSession {
        let response = self.login(username, PASSWORD, delivery.name()).await;
        assert_eq!(response.status(), StatusCode::OK, "login of {username}");
        ClientSession::from_login(delivery, response).await
    }

    /// Sends a request carrying `session`'s token as the client would.
    pub async fn send(&self, method: Method, path: &str, session: &ClientSession) -> Response {
        let request = self.client.request(method, self.url(path));
        session.authorize(request).send().await.unwrap()
    }
}

/// How the client logged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Cookie,
    Bearer,
}

impl Delivery {
    pub fn name(self) -> &'static str {
        match self {
            Delivery::Cookie => "cookie",
            Delivery::Bearer => "bearer",
        }
    }
}

/// What a client holds after login.
#[derive(Debug, Clone)]
pub struct ClientSession {
    pub delivery: Delivery,
    pub access: String,
    pub refresh: Option<String>,
    pub session_id: String,
}

impl ClientSession {
    pub async fn from_login(delivery: Delivery, response: Response) -> ClientSession {
        let cookie = set_cookie(&response);
        let body: Value = response.json().await.unwrap();
        match delivery {
            Delivery::Cookie => ClientSession {
                delivery,
                access: cookie.expect("a session cookie"),
                refresh: None,
                session_id: body["session_id"].as_str().unwrap().to_owned(),
            },
            Delivery::Bearer => ClientSession {
                delivery,
                access: body["access_token"].as_str().unwrap().to_owned(),
                refresh: body["refresh_token"].as_str().map(str::to_owned),
                session_id: body["session_id"].as_str().unwrap().to_owned(),
            },
        }
    }

    pub fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.delivery {
            Delivery::Cookie => request.header("cookie", format!("__Host-tessera={}", self.access)),
            Delivery::Bearer => request.bearer_auth(&self.access),
        }
    }

    /// Takes a renewed cookie from a response, if the server sent one.
    pub fn absorb(&mut self, response: &Response) {
        if let Some(cookie) = set_cookie(response).filter(|c| !c.is_empty()) {
            self.access = cookie;
        }
    }
}

/// The value of the `__Host-tessera` cookie set by a response.
pub fn set_cookie(response: &Response) -> Option<String> {
    raw_set_cookie(response).map(|raw| {
        raw.trim_start_matches("__Host-tessera=")
            .split(';')
            .next()
            .unwrap_or("")
            .to_owned()
    })
}

/// The whole `Set-Cookie` header for the session cookie.
pub fn raw_set_cookie(response: &Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Host-tessera="))
        .map(str::to_owned)
}

/// Reads a problem response and checks its shape; returns its `code`.
pub async fn problem_code(response: Response) -> String {
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "problem responses are application/problem+json"
    );
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    for field in ["type", "title", "detail", "code"] {
        assert!(body[field].is_string(), "problem lacks {field}: {body}");
    }
    body["code"].as_str().unwrap().to_owned()
}

pub fn format_of(token: &str) -> TokenFormat {
    if token.starts_with("tsr_") {
        TokenFormat::Opaque
    } else {
        TokenFormat::Jwt
    }
}

/// Counts the store operations a server makes, by name, as a layer over its store.
#[derive(Default)]
pub struct Operations {
    counts: std::sync::Mutex<std::collections::HashMap<&'static str, usize>>,
}

impl Operations {
    /// How many of these operations were made so far.
    pub fn of(&self, names: &[&str]) -> usize {
        let counts = self.counts.lock().unwrap();
        names
            .iter()
            .map(|name| counts.get(name).copied().unwrap_or(0))
            .sum()
    }

    /// Every operation made so far, by name.
    pub fn all(&self) -> std::collections::HashMap<&'static str, usize> {
        self.counts.lock().unwrap().clone()
    }
}

impl tessera_store::Layer for Operations {
    fn around<'a, T: Send + 'a>(
        &'a self,
        operation: &'static str,
        call: tessera_store::StoreFuture<'a, T>,
    ) -> impl std::future::Future<Output = tessera_store::StoreResult<T>> + Send + 'a {
        *self.counts.lock().unwrap().entry(operation).or_default() += 1;
        call
    }
}

impl TestServer {
    /// A server (configured by `tweak`) whose store operations are counted.
    pub async fn counting(
        tweak: impl FnOnce(&mut Config),
    ) -> (TestServer, Arc<tessera_store::Layered<Operations>>) {
        let mut counted = None;
        let server = TestServer::start_custom(tweak, T0, |inner| {
            let store = Arc::new(tessera_store::Layered::new(
                Arc::new(inner),
                Operations::default(),
            ));
            counted = Some(Arc::clone(&store));
            store
        })
        .await;
        (server, counted.unwrap())
    }
}

// ------------------------------------------- tokens signed with the server's real key

/// The decoded bytes of segment `index` of a compact JWS.
pub fn segment(token: &str, index: usize) -> Vec<u8> {
    b64::decode(token.split('.').nth(index).unwrap()).unwrap()
}

/// A JWT's header, as JSON.
pub fn header_of(token: &str) -> Value {
    serde_json::from_slice(&segment(token, 0)).unwrap()
}

/// A JWT's claims, as JSON.
pub fn claims_of(token: &str) -> Value {
    serde_json::from_slice(&segment(token, 1)).unwrap()
}

/// Signs raw header and payload bytes with the server's genuine current signing key.
pub fn sign_raw(server: &TestServer, header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", b64::encode(header), b64::encode(payload));
    let signature = server
        .service
        .key_ring()
        .keys()
        .set
        .current()
        .sign(input.as_bytes())
        .unwrap();
    format!("{input}.{}", b64::encode(&signature))
}

/// Signs a header and claims (as JSON values) with the server's genuine current key.
pub fn sign_json(server: &TestServer, header: &Value, claims: &Value) -> String {
    sign_raw(
        server,
        header.to_string().as_bytes(),
        claims.to_string().as_bytes(),
    )
}
