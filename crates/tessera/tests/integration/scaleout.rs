//! Several `tessera serve` processes sharing PostgreSQL and Redis: logins, revocations and key
//! rotations seen by all; a Redis outage fails closed and heals without restarts.
//!
//! These tests need `TESSERA_TEST_DATABASE_URL` and `TESSERA_TEST_REDIS_URL` (set by
//! `.ci/run`); on a developer machine without them they print a notice and pass, under CI they
//! fail. The outage test also starts a `redis-server` of its own.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_store::conformance::test_service_url;
use tessera_store_postgres::TestSchema;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::external::spare_port;
use crate::factors::code_at;
use crate::passkeys::{create, get, page_with_authenticator};
use crate::support::{ClientSession, Delivery, PASSWORD, TempDir, problem_code};

const BIN: &str = env!("CARGO_BIN_EXE_tessera");

/// Keys under a random prefix of a Redis, deleted when dropped.
struct RedisPrefix {
    base: String,
    prefix: String,
}

impl RedisPrefix {
    fn new(base: &str) -> RedisPrefix {
        RedisPrefix {
            base: base.to_owned(),
            prefix: format!("tessera-it-{}", tessera_core::random::id().unwrap()),
        }
    }

    fn url(&self) -> String {
        format!("{}?prefix={}", self.base, self.prefix)
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        // A loaded machine can be slow to answer: a few tries, so no keys are left behind.
        for _ in 0..3 {
            let cleaned = redis::Client::open(self.base.as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
                .and_then(|mut conn| {
                    let keys: Vec<String> = redis::cmd("KEYS")
                        .arg(format!("{}:*", self.prefix))
                        .query(&mut conn)?;
                    if !keys.is_empty() {
                        redis::cmd("DEL").arg(keys).query::<()>(&mut conn)?;
                    }
                    Ok(())
                });
            if cleaned.is_ok() {
                return;
            }
        }
    }
}

/// What every instance of one deployment shares.
struct Deployment {
    dir: TempDir,
    store: String,
    sessions: String,
    extra_env: Vec<(String, String)>,
}

/// The master key every process of a test deployment is given (32 bytes, base64url).
const SHARED_MASTER_KEY: &str = "dGVzc2VyYS10ZXN0LW1hc3Rlci1rZXktMzItYnl0ZXM";

impl Deployment {
    fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(&self.dir.0)
            .env("TESSERA_ADMIN_PASSWORD", PASSWORD)
            .env("TESSERA_ARGON2_MEMORY_KIB", "1024")
            .env("TESSERA_ARGON2_ITERATIONS", "1")
            .env("TESSERA_STORE", &self.store)
            .env("TESSERA_SESSIONS", &self.sessions)
            // Instances sharing a store share its master key (a shared store requires one).
            .env("TESSERA_MASTER_KEY", SHARED_MASTER_KEY)
            .envs(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .kill_on_drop(true);
        cmd
    }

    /// Starts one `tessera serve` and waits until it listens.
    async fn serve(&self) -> Instance {
        self.serve_on(spare_port()).await
    }

    /// Starts one `tessera serve` on `port` (known beforehand, e.g. to name its origin in the
    /// configuration) and waits until it listens.
    async fn serve_on(&self, port: u16) -> Instance {
        let mut child = self
            .command()
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
            panic!("tessera exited before listening: {seen:#?}");
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .expect("tessera started in time");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Instance {
            _child: child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Runs a CLI command against the same stores; returns stdout.
    async fn cli(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().await.unwrap();
        assert!(
            out.status.success(),
            "tessera {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// A deployment on the test PostgreSQL (a schema of its own) and the test Redis (a key prefix
/// of its own), both removed afterwards.
struct Shared {
    deployment: Deployment,
    _schema: TestSchema,
    _prefix: RedisPrefix,
}

impl Shared {
    /// `None` (the test passes with a notice) where the test services are not configured.
    async fn deployment() -> Option<Shared> {
        let database = test_service_url("TESSERA_TEST_DATABASE_URL")?;
        let redis = test_service_url("TESSERA_TEST_REDIS_URL")?;
        let schema = TestSchema::create(&database).await.unwrap();
        let prefix = RedisPrefix::new(&redis);
        Some(Shared {
            deployment: Deployment {
                dir: TempDir::new(),
                store: schema.url().to_owned(),
                sessions: prefix.url(),
                extra_env: Vec::new(),
            },
            _schema: schema,
            _prefix: prefix,
        })
    }
}

struct Instance {
    _child: Child,
    base: String,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

impl Instance {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn login(&self, delivery: Delivery) -> ClientSession {
        let response = client()
            .post(self.url("/v1/login"))
            .json(
                &json!({ "username": "admin", "password": PASSWORD, "delivery": delivery.name() }),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "login on {}", self.base);
        ClientSession::from_login(delivery, response).await
    }

    /// Logs `username` in with `password`.
    async fn login_as(&self, username: &str, password: &str, delivery: Delivery) -> ClientSession {
        let response = client()
            .post(self.url("/v1/login"))
            .json(
                &json!({ "username": username, "password": password, "delivery": delivery.name() }),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "login of {username} on {}",
            self.base
        );
        ClientSession::from_login(delivery, response).await
    }

    async fn verify(&self, session: &ClientSession) -> reqwest::Response {
        session
            .authorize(client().get(self.url("/v1/verify")))
            .send()
            .await
            .unwrap()
    }

    async fn verify_status(&self, session: &ClientSession) -> StatusCode {
        self.verify(session).await.status()
    }

    async fn jwks_kids(&self) -> Vec<String> {
        let jwks: Value = client()
            .get(self.url("/.well-known/jwks.json"))
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
}

/// The `kid` in a JWT's header.
fn kid_of(jwt: &str) -> String {
    use base64::Engine;
    let header = jwt.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let header: Value = serde_json::from_slice(&bytes).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

/// The current key's id according to `tessera key list`.
fn current_kid(listing: &str) -> String {
    listing
        .lines()
        .find(|l| l.ends_with("current"))
        .and_then(|l| l.split('\t').next())
        .unwrap()
        .to_owned()
}

/// Polls `check` every 10 ms until it holds or `limit` passes; returns how long it took.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Three instances on loopback sharing PostgreSQL (users, keys) and Redis (sessions). A login on
/// one is valid on all; a revocation on one fails the very next verify on the others, for
/// opaque cookie sessions and JWT bearer tokens alike; a refresh token rotates on any instance
/// and concurrent refreshes on two instances agree; a key rotation is served and used by all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_logins_revocations_and_keys() {
    let Some(shared) = Shared::deployment().await else {
        return;
    };
    let deployment = &shared.deployment;
    // Started together: migrations, the first key and the admin user race, and must not fail.
    let (a, b, c) = tokio::join!(deployment.serve(), deployment.serve(), deployment.serve());
    let all = [&a, &b, &c];

    // Opaque cookie session: log in on A, valid on B and C.
    let cookie = a.login(Delivery::Cookie).await;
    assert!(cookie.access.starts_with("tsr_"));
    for instance in all {
        assert_eq!(instance.verify_status(&cookie).await, StatusCode::OK);
    }
    // Revoke on C (logout); the very next verify on A and B fails.
    let logout = cookie
        .authorize(client().post(c.url("/v1/logout")))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    for instance in [&a, &b] {
        let response = instance.verify(&cookie).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(problem_code(response).await, "token_revoked");
    }

    // JWT bearer token: log in on A, valid on B and C.
    let bearer = a.login(Delivery::Bearer).await;
    assert_eq!(bearer.access.split('.').count(), 3, "a JWT");
    for instance in all {
        assert_eq!(instance.verify_status(&bearer).await, StatusCode::OK);
    }
    // Revoke on C, from another session of the same user (per-device revoke).
    let other = c.login(Delivery::Cookie).await;
    let revoke = other
        .authorize(client().delete(c.url(&format!("/v1/sessions/{}", bearer.session_id))))
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
    for instance in [&a, &b] {
        let response = instance.verify(&bearer).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(problem_code(response).await, "token_revoked");
    }
    // The refresh token of the revoked session is dead everywhere too.
    let refresh = client()
        .post(b.url("/v1/refresh"))
        .json(&json!({ "refresh_token": bearer.refresh.clone().unwrap() }))
        .send()
        .await
        .unwrap();
    assert_eq!(refresh.status(), StatusCode::UNAUTHORIZED);

    // Refresh across instances: the same token presented to B and C at once yields one pair.
    let fresh = a.login(Delivery::Bearer).await;
    let refresh_on = |instance: &Instance| {
        client()
            .post(instance.url("/v1/refresh"))
            .json(&json!({ "refresh_token": fresh.refresh.clone().unwrap() }))
            .send()
    };
    let (on_b, on_c) = tokio::join!(refresh_on(&b), refresh_on(&c));
    let (on_b, on_c) = (on_b.unwrap(), on_c.unwrap());
    assert_eq!(
        (on_b.status(), on_c.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let (on_b, on_c): (Value, Value) = (on_b.json().await.unwrap(), on_c.json().await.unwrap());
    assert_eq!(on_b["access_token"], on_c["access_token"]);
    assert_eq!(on_b["refresh_token"], on_c["refresh_token"]);
    let renewed = ClientSession {
        delivery: Delivery::Bearer,
        access: on_b["access_token"].as_str().unwrap().to_owned(),
        refresh: on_b["refresh_token"].as_str().map(str::to_owned),
        session_id: fresh.session_id.clone(),
    };
    for instance in all {
        assert_eq!(instance.verify_status(&renewed).await, StatusCode::OK);
    }

    // Key rotation, made by the CLI against the shared store (none of the three did it): all
    // three serve the new key in their JWKS, and B signs with it.
    let old_kid = kid_of(&renewed.access);
    assert_eq!(
        current_kid(&deployment.cli(&["key", "list"]).await),
        old_kid
    );
    let rotated = Instant::now();
    deployment.cli(&["key", "rotate"]).await;
    let new_kid = current_kid(&deployment.cli(&["key", "list"]).await);
    assert_ne!(new_kid, old_kid);
    let mut slowest = Duration::ZERO;
    for instance in all {
        let took = within(
            Duration::from_secs(3),
            "the new key in the JWKS",
            || async { instance.jwks_kids().await.contains(&new_kid) },
        )
        .await;
        slowest = slowest.max(took);
        // The previous key keeps verifying: it is still listed.
        assert!(instance.jwks_kids().await.contains(&old_kid));
    }
    let signed = b.login(Delivery::Bearer).await;
    assert_eq!(kid_of(&signed.access), new_kid, "B signs with the new key");
    eprintln!(
        "key rotation: in every JWKS within {slowest:?} of the CLI returning \
         ({:?} after it started)",
        rotated.elapsed()
    );
    for instance in all {
        assert_eq!(instance.verify_status(&signed).await, StatusCode::OK);
        // Tokens signed with the previous key still verify.
        assert_eq!(instance.verify_status(&renewed).await, StatusCode::OK);
    }

    // Key rotation on A through the admin API: B signs with the new key at once and all three
    // serve it in their JWKS.
    let admin = a.login(Delivery::Bearer).await;
    let response = admin
        .authorize(client().post(a.url("/v1/admin/keys/rotate")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let api_kid = response.json::<Value>().await.unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(api_kid, new_kid);
    for instance in all {
        within(
            Duration::from_secs(3),
            "the key rotated on A in the JWKS",
            || async { instance.jwks_kids().await.contains(&api_kid) },
        )
        .await;
    }
    let signed_after_api = b.login(Delivery::Bearer).await;
    assert_eq!(
        kid_of(&signed_after_api.access),
        api_kid,
        "B signs with A's new key"
    );
    for instance in all {
        assert_eq!(
            instance.verify_status(&signed_after_api).await,
            StatusCode::OK
        );
        assert_eq!(instance.verify_status(&signed).await, StatusCode::OK);
    }
}

/// With no notification channel between them (two instances on one SQLite file), a rotation
/// made by the CLI still reaches both through the polling fallback, within its interval.
/// The measure of issue 13 on a shared deployment: a service verifying JWTs with
/// tessera-verify follows the feed of instance A; logouts made on B and C reach it within
/// 100 ms at the 99th percentile, and it asks no instance anything per verified token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logouts_on_any_instance_reach_a_local_verifier_through_the_feed() {
    let Some(shared) = Shared::deployment().await else {
        return;
    };
    let deployment = &shared.deployment;
    let (a, b, c) = tokio::join!(deployment.serve(), deployment.serve(), deployment.serve());
    // Instances started together race to create the first key; wait until A publishes the
    // one B and C sign with (the verifier takes A's JWKS as it is at build).
    for instance in [&b, &c] {
        let kid = kid_of(&instance.login(Delivery::Bearer).await.access);
        within(
            Duration::from_secs(5),
            "A publishing the current key",
            || async { a.jwks_kids().await.contains(&kid) },
        )
        .await;
    }
    let verifier = tessera_verify::Verifier::builder(&a.base)
        .build()
        .await
        .unwrap();
    let requests_to_a = || async { feedless_requests(&a).await };
    let before = requests_to_a().await;

    let mut latencies = Vec::new();
    for round in 0..30 {
        let (login_on, logout_on) = if round % 2 == 0 { (&b, &c) } else { (&c, &b) };
        let session = login_on.login(Delivery::Bearer).await;
        for _ in 0..10 {
            verifier.verify(&session.access).await.unwrap();
        }
        let logout = session
            .authorize(client().post(logout_on.url("/v1/logout")))
            .send()
            .await
            .unwrap();
        assert_eq!(logout.status(), StatusCode::NO_CONTENT);
        let took = within(
            Duration::from_secs(5),
            "the local verifier refusing",
            || async {
                matches!(
                    verifier.verify(&session.access).await,
                    Err(rejection) if rejection.code() == "token_revoked"
                )
            },
        )
        .await;
        latencies.push(took);
    }
    latencies.sort();
    let p99 = latencies[(latencies.len() * 99).div_ceil(100) - 1];
    println!(
        "feed over three instances (PostgreSQL + Redis): {} logouts, p99 {p99:?}, max {:?}",
        latencies.len(),
        latencies.last().unwrap()
    );
    assert!(p99 <= Duration::from_millis(100), "p99 {p99:?}");
    // Apart from the feed (and the metrics reads of this test), A was asked nothing.
    assert_eq!(requests_to_a().await, before);
}

/// Requests instance `instance` has answered, except feed and metrics requests (from its
/// `/metrics`).
async fn feedless_requests(instance: &Instance) -> u64 {
    let text = client()
        .get(instance.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| line.starts_with("tessera_http_requests_total{"))
        .filter(|line| !line.contains("/v1/revocations") && !line.contains("/metrics"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|count| count as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotations_reach_every_instance_by_polling_when_no_notice_arrives() {
    let dir = TempDir::new();
    let db = dir.0.join("shared.db");
    let deployment = Deployment {
        store: format!("sqlite://{}", db.display()),
        sessions: "same".into(),
        extra_env: vec![("TESSERA_KEY_POLL_INTERVAL".into(), "1".into())],
        dir,
    };
    let a = deployment.serve().await;
    let b = deployment.serve().await;
    deployment.cli(&["key", "rotate"]).await;
    let new_kid = current_kid(&deployment.cli(&["key", "list"]).await);
    for instance in [&a, &b] {
        let took = within(
            Duration::from_secs(4),
            "the polled key in the JWKS",
            || async { instance.jwks_kids().await.contains(&new_kid) },
        )
        .await;
        eprintln!("polling picked up the rotation in {took:?}");
    }
    let signed = b.login(Delivery::Bearer).await;
    assert_eq!(kid_of(&signed.access), new_kid);
    assert_eq!(a.verify_status(&signed).await, StatusCode::OK);
}

/// A `redis-server` of the test's own, on a spare port, persisting every write before it
/// answers (`appendfsync always`), so a kill loses nothing acknowledged.
struct OwnRedis {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl OwnRedis {
    async fn start(port: u16, dir: TempDir) -> OwnRedis {
        let mut redis = OwnRedis {
            port,
            dir,
            child: None,
        };
        redis.restart().await;
        redis
    }

    async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(Path::new(&self.dir.0))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        self.child = Some(child);
        let port = self.port;
        within(
            Duration::from_secs(10),
            "redis-server to answer",
            || async move {
                redis::Client::open(format!("redis://127.0.0.1:{port}"))
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                    .is_ok()
            },
        )
        .await;
    }

    /// Sends `signal` (e.g. `-STOP`, `-CONT`) to the test's own redis-server.
    async fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("redis-server runs");
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .await
            .unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// SIGKILL: no shutdown save, nothing but what was already on disk survives.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }
}

/// What one probe of the load saw.
#[derive(Debug, Default)]
struct Tally {
    ok: u32,
    unavailable: u32,
    unauthorized: u32,
    other: Vec<u16>,
    slowest: Duration,
}

/// Redis is killed while two instances serve a stream of verifies: live sessions answer 503
/// (never 401, never a hang), revoked and unknown tokens never 200, logins 503, `/readyz` not
/// ready. Redis restarts on the same port and data, and the same instances serve again: the
/// live sessions verify, the revocations made before the outage still hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_fails_closed_and_heals_without_restart() {
    let Some(database) = test_service_url("TESSERA_TEST_DATABASE_URL") else {
        return;
    };
    let schema = TestSchema::create(&database).await.unwrap();
    let port = spare_port();
    let mut redis = OwnRedis::start(port, TempDir::new()).await;
    let deployment = Deployment {
        dir: TempDir::new(),
        store: schema.url().to_owned(),
        sessions: format!("redis://127.0.0.1:{port}"),
        extra_env: Vec::new(),
    };
    let (a, b) = tokio::join!(deployment.serve(), deployment.serve());

    // Acknowledged before the outage: two live sessions, two revoked ones.
    let live_cookie = a.login(Delivery::Cookie).await;
    let live_jwt = b.login(Delivery::Bearer).await;
    let revoked_cookie = a.login(Delivery::Cookie).await;
    let revoked_jwt = a.login(Delivery::Bearer).await;
    for (session, on) in [(&revoked_cookie, &b), (&revoked_jwt, &a)] {
        let response = session
            .authorize(client().post(on.url("/v1/logout")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    let unknown = ClientSession {
        delivery: Delivery::Cookie,
        access: format!("tsr_{}", "A".repeat(43)),
        refresh: None,
        session_id: String::new(),
    };
    for instance in [&a, &b] {
        assert_eq!(instance.verify_status(&live_cookie).await, StatusCode::OK);
        assert_eq!(instance.verify_status(&live_jwt).await, StatusCode::OK);
        assert_eq!(
            instance.verify_status(&revoked_cookie).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            instance.verify_status(&revoked_jwt).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            instance.verify_status(&unknown).await,
            StatusCode::UNAUTHORIZED
        );
    }

    // Load: each probe verifies its token on both instances in a loop until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Probes that finished a first round (on both instances), before the outage.
    let warmed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let probe = |session: ClientSession| {
        let stop = stop.clone();
        let warmed = warmed.clone();
        let urls = [a.url("/v1/verify"), b.url("/v1/verify")];
        tokio::spawn(async move {
            let client = client();
            let mut tally = Tally::default();
            let mut first_503: Option<Instant> = None;
            let mut requests = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && requests < 200_000 {
                for url in &urls {
                    requests += 1;
                    let sent = Instant::now();
                    let status = session
                        .authorize(client.get(url))
                        .send()
                        .await
                        .unwrap()
                        .status();
                    tally.slowest = tally.slowest.max(sent.elapsed());
                    match status {
                        StatusCode::OK => tally.ok += 1,
                        StatusCode::SERVICE_UNAVAILABLE => {
                            tally.unavailable += 1;
                            first_503.get_or_insert(Instant::now());
                        }
                        StatusCode::UNAUTHORIZED => tally.unauthorized += 1,
                        other => tally.other.push(other.as_u16()),
                    }
                }
                if requests == urls.len() as u32 {
                    warmed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (tally, first_503)
        })
    };
    let probes = [
        probe(live_cookie.clone()),
        probe(live_jwt.clone()),
        probe(revoked_cookie.clone()),
        probe(revoked_jwt.clone()),
        probe(unknown.clone()),
    ];
    // Every probe has been answered before the outage (waiting on that, not a fixed sleep).
    within(
        Duration::from_secs(10),
        "every probe to finish a round",
        || {
            let warmed = warmed.clone();
            async move { warmed.load(std::sync::atomic::Ordering::Relaxed) == 5 }
        },
    )
    .await;

    let killed = Instant::now();
    redis.kill().await;
    // Fail closed within about a second: the live session answers 503, with Retry-After.
    let response = loop {
        let response = a.verify(&live_cookie).await;
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            break response;
        }
        assert_ne!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "never 401 for a live session"
        );
        assert!(
            killed.elapsed() < Duration::from_secs(3),
            "no 503 after the kill"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = killed.elapsed();
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(problem_code(response).await, "store_unavailable");
    eprintln!("outage: first 503 {took:?} after the kill");
    // During the outage: logins fail closed, readiness says so, and it stays that way.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for instance in [&a, &b] {
        let started = Instant::now();
        let login = client()
            .post(instance.url("/v1/login"))
            .json(&json!({ "username": "admin", "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "{:?}",
            started.elapsed()
        );
        let ready = client().get(instance.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            instance.verify_status(&live_jwt).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let outage = killed.elapsed();

    // Back on the same port, from its append-only file.
    let restarted = Instant::now();
    redis.restart().await;
    let healed = within(Duration::from_secs(10), "verify to work again", || async {
        a.verify_status(&live_cookie).await == StatusCode::OK
            && b.verify_status(&live_cookie).await == StatusCode::OK
    })
    .await;
    eprintln!(
        "outage of {outage:?}; served again {healed:?} after redis answered \
         ({:?} after the restart began)",
        restarted.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut tallies = Vec::new();
    for probe in probes {
        tallies.push(probe.await.unwrap());
    }
    let names = [
        "live cookie",
        "live JWT",
        "revoked cookie",
        "revoked JWT",
        "unknown",
    ];
    for (name, (tally, first)) in names.iter().zip(&tallies) {
        eprintln!(
            "{name}: {tally:?}, first 503 {:?} after the kill",
            first.map(|f| f.saturating_duration_since(killed))
        );
        assert!(
            tally.other.is_empty(),
            "{name}: unexpected statuses {:?}",
            tally.other
        );
        assert!(tally.unavailable > 0, "{name} saw the outage");
        assert!(
            tally.slowest < Duration::from_millis(2500),
            "{name}: a request took {:?}",
            tally.slowest
        );
    }
    for (name, (tally, _)) in names.iter().zip(&tallies).skip(2) {
        assert_eq!(tally.ok, 0, "{name} was never accepted");
    }
    for (name, (tally, _)) in names.iter().zip(&tallies).take(2) {
        assert_eq!(
            tally.unauthorized, 0,
            "{name} was never refused as unauthenticated"
        );
        assert!(tally.ok > 0, "{name} was accepted before and after");
    }

    // Nothing acknowledged before the outage was lost.
    for instance in [&a, &b] {
        assert_eq!(instance.verify_status(&live_cookie).await, StatusCode::OK);
        assert_eq!(instance.verify_status(&live_jwt).await, StatusCode::OK);
        for revoked in [&revoked_cookie, &revoked_jwt] {
            let response = instance.verify(revoked).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(problem_code(response).await, "token_revoked");
        }
        let ready = client().get(instance.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), StatusCode::OK);
    }
    // Logins work again too. A login makes several store calls, and on a loaded machine one of
    // them may still find a connection that died with the old server: that attempt fails
    // closed (503, never anything else) and the next one is served, without a restart.
    let mut login_503s = 0;
    let after = loop {
        let response = client()
            .post(b.url("/v1/login"))
            .json(&json!({ "username": "admin", "password": PASSWORD, "delivery": "bearer" }))
            .send()
            .await
            .unwrap();
        match response.status() {
            StatusCode::OK => break ClientSession::from_login(Delivery::Bearer, response).await,
            StatusCode::SERVICE_UNAVAILABLE if login_503s < 5 => login_503s += 1,
            other => panic!("login after the outage: {other} (after {login_503s} 503s)"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(a.verify_status(&after).await, StatusCode::OK);
}

/// A frozen Redis (SIGSTOP: connections stay open, nothing answers — the worst outage, as no
/// error ever arrives) gives a 503 with `Retry-After` within one second end to end, on verify
/// (opaque and JWT), login and refresh, each asked several times (the first on a connection
/// that was healthy, later ones while it reconnects); thawed, the same instance serves again.
/// Issue 11 #10: a 1 s bound per Redis call answered after ~1,002 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_answers_503_within_a_second() {
    let Some(database) = test_service_url("TESSERA_TEST_DATABASE_URL") else {
        return;
    };
    let schema = TestSchema::create(&database).await.unwrap();
    let port = spare_port();
    let redis = OwnRedis::start(port, TempDir::new()).await;
    let deployment = Deployment {
        dir: TempDir::new(),
        store: schema.url().to_owned(),
        sessions: format!("redis://127.0.0.1:{port}"),
        extra_env: Vec::new(),
    };
    let a = deployment.serve().await;
    let cookie = a.login(Delivery::Cookie).await;
    let bearer = a.login(Delivery::Bearer).await;
    let refresh_token = bearer
        .refresh
        .clone()
        .expect("a bearer login has a refresh token");
    assert_eq!(a.verify_status(&cookie).await, StatusCode::OK);
    assert_eq!(a.verify_status(&bearer).await, StatusCode::OK);

    redis.signal("-STOP").await;
    let client = client();
    let mut slowest = Duration::ZERO;
    for round in 0..3 {
        let requests = [
            (
                "verify (cookie)",
                cookie.authorize(client.get(a.url("/v1/verify"))),
            ),
            (
                "verify (JWT)",
                bearer.authorize(client.get(a.url("/v1/verify"))),
            ),
            (
                "login",
                client
                    .post(a.url("/v1/login"))
                    .json(&json!({ "username": "admin", "password": PASSWORD })),
            ),
            (
                "refresh",
                client
                    .post(a.url("/v1/refresh"))
                    .json(&json!({ "refresh_token": refresh_token })),
            ),
        ];
        for (what, request) in requests {
            let sent = Instant::now();
            let response = request.send().await.unwrap();
            let took = sent.elapsed();
            slowest = slowest.max(took);
            assert_eq!(
                response.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "{what}, round {round}: fails closed"
            );
            assert!(
                response.headers().contains_key("retry-after"),
                "{what}: Retry-After"
            );
            assert_eq!(problem_code(response).await, "store_unavailable", "{what}");
            assert!(
                took < Duration::from_secs(1),
                "{what}, round {round}: the 503 took {took:?}"
            );
        }
    }
    eprintln!("frozen redis: slowest 503 after {slowest:?}");

    redis.signal("-CONT").await;
    within(Duration::from_secs(10), "verify to work again", || async {
        a.verify_status(&cookie).await == StatusCode::OK
    })
    .await;
    assert_eq!(a.verify_status(&bearer).await, StatusCode::OK);
}

/// A TCP relay on a spare port in front of the shared PostgreSQL, which the test can cut (every
/// connection dropped, nothing listening) and restore: a database outage without stopping the
/// database other tests use.
struct Relay {
    port: u16,
    upstream: String,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(upstream: &str) -> Relay {
        let relay = Relay {
            port: spare_port(),
            upstream: upstream.to_owned(),
            tasks: Default::default(),
        };
        relay.resume().await;
        relay
    }

    async fn resume(&self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        let upstream = self.upstream.clone();
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(relay);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
    }
}

/// PostgreSQL becomes unreachable (every connection cut) while an instance keeps all its state
/// there: verify and login answer 503 within about a second, revoked tokens are never accepted,
/// `/readyz` is not ready; once the database is reachable again the same instance serves again,
/// and its change-notice listener is back too (a rotation reaches it long before the polling
/// fallback would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_fails_closed_and_heals_without_restart() {
    let Some(database) = test_service_url("TESSERA_TEST_DATABASE_URL") else {
        return;
    };
    let schema = TestSchema::create(&database).await.unwrap();
    let upstream: tokio_postgres_url::Parts = tokio_postgres_url::parse(&database);
    let relay = Relay::start(&upstream.host_port).await;
    let through_relay =
        schema
            .url()
            .replacen(&upstream.host_port, &format!("127.0.0.1:{}", relay.port), 1);
    let deployment = Deployment {
        dir: TempDir::new(),
        store: through_relay,
        sessions: "same".into(),
        extra_env: Vec::new(),
    };
    let a = deployment.serve().await;
    let live = a.login(Delivery::Bearer).await;
    let revoked = a.login(Delivery::Cookie).await;
    let logout = revoked
        .authorize(client().post(a.url("/v1/logout")))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);

    let cut = Instant::now();
    relay.cut();
    let mut first_503 = None;
    while first_503.is_none() {
        let sent = Instant::now();
        match a.verify_status(&live).await {
            StatusCode::SERVICE_UNAVAILABLE => first_503 = Some((cut.elapsed(), sent.elapsed())),
            StatusCode::OK => {}
            other => panic!("live token answered {other} during the outage"),
        }
        assert!(
            cut.elapsed() < Duration::from_secs(3),
            "no 503 after the cut"
        );
        assert_ne!(a.verify_status(&revoked).await, StatusCode::OK);
    }
    let (after, latency) = first_503.unwrap();
    eprintln!("postgres outage: first 503 {after:?} after the cut (that request took {latency:?})");
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(
            a.verify_status(&live).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            a.verify_status(&revoked).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "{:?}",
            started.elapsed()
        );
    }
    let login = client()
        .post(a.url("/v1/login"))
        .json(&json!({ "username": "admin", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready = client().get(a.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    relay.resume().await;
    let healed = within(Duration::from_secs(10), "verify to work again", || async {
        a.verify_status(&live).await == StatusCode::OK
    })
    .await;
    eprintln!("postgres outage: served again {healed:?} after the database was reachable");
    assert_eq!(a.verify_status(&revoked).await, StatusCode::UNAUTHORIZED);
    let ready = client().get(a.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    // The listener reconnected (with backoff of at most 5 s): a rotation made directly on the
    // database reaches the instance well inside the 15 s polling interval.
    let direct = Deployment {
        store: schema.url().to_owned(),
        ..deployment
    };
    direct.cli(&["key", "rotate"]).await;
    let new_kid = current_kid(&direct.cli(&["key", "list"]).await);
    let took = within(
        Duration::from_secs(8),
        "the notice after reconnecting",
        || async { a.jwks_kids().await.contains(&new_kid) },
    )
    .await;
    eprintln!("postgres outage: rotation seen {took:?} after it was made");
}

/// Host and port of a `postgres://` URL, for the relay.
mod tokio_postgres_url {
    pub struct Parts {
        pub host_port: String,
    }

    pub fn parse(url: &str) -> Parts {
        let rest = url.split_once("://").unwrap().1;
        let authority = rest.split(['/', '?']).next().unwrap();
        let host_port = authority.rsplit('@').next().unwrap();
        let host_port = if host_port.contains(':') {
            host_port.to_owned()
        } else {
            format!("{host_port}:5432")
        };
        Parts { host_port }
    }
}

/// A shared store without a configured master key is refused at start-up, with a clear
/// message: instances must never each invent their own key for the same stored signing keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_store_refuses_to_start_without_a_master_key() {
    let Some(database) = test_service_url("TESSERA_TEST_DATABASE_URL") else {
        return;
    };
    let schema = TestSchema::create(&database).await.unwrap();
    let dir = TempDir::new();
    let out = Command::new(BIN)
        .current_dir(&dir.0)
        .env_remove("TESSERA_MASTER_KEY")
        .env("TESSERA_STORE", schema.url())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("needs the same master key on every instance"),
        "{stderr}"
    );
    assert!(
        !dir.0.join("tessera-data/master.key").exists(),
        "no key was invented"
    );
}

/// `tessera serve` keeps its sessions on a Redis that speaks only TLS and asks for a client
/// certificate: `rediss://` with `redis_ca_file`, `redis_client_cert` and `redis_client_key`.
/// Without the client certificate the start fails (nothing falls back to plain TCP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_on_redis_over_tls_with_a_client_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    let Some(database) = test_service_url("TESSERA_TEST_DATABASE_URL") else {
        return;
    };
    test_service_url("TESSERA_TEST_REDIS_URL");
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tessera test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &issuer).unwrap();
    let certs = TempDir::new();
    for (name, pem) in [
        ("ca.pem", ca.pem()),
        ("cert.pem", cert.pem()),
        ("key.pem", key.serialize_pem()),
    ] {
        std::fs::write(certs.0.join(name), pem).unwrap();
    }
    let port = spare_port();
    let _redis = Command::new("redis-server")
        .args(["--port", "0", "--bind", "127.0.0.1", "--save", ""])
        .args(["--tls-port", &port.to_string()])
        .arg("--tls-cert-file")
        .arg(certs.0.join("cert.pem"))
        .arg("--tls-key-file")
        .arg(certs.0.join("key.pem"))
        .arg("--tls-ca-cert-file")
        .arg(certs.0.join("ca.pem"))
        .args(["--tls-auth-clients", "yes"])
        .arg("--dir")
        .arg(&certs.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server is installed");
    within(
        Duration::from_secs(10),
        "redis-server to listen",
        || async move { std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() },
    )
    .await;

    let schema = TestSchema::create(&database).await.unwrap();
    let file = |name: &str| certs.0.join(name).display().to_string();
    let mut deployment = Deployment {
        dir: TempDir::new(),
        store: schema.url().to_owned(),
        sessions: format!("rediss://localhost:{port}?prefix=tls"),
        extra_env: vec![("TESSERA_REDIS_CA_FILE".to_owned(), file("ca.pem"))],
    };
    // No client certificate: the server refuses the handshake and tessera does not start.
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        deployment
            .command()
            .args(["serve", "--listen", &format!("127.0.0.1:{}", spare_port())])
            .output(),
    )
    .await
    .expect("tessera gave up in time")
    .unwrap();
    assert!(
        !out.status.success(),
        "started without a client certificate"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Redis"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    deployment.extra_env.extend([
        ("TESSERA_REDIS_CLIENT_CERT".to_owned(), file("cert.pem")),
        ("TESSERA_REDIS_CLIENT_KEY".to_owned(), file("key.pem")),
    ]);
    let a = deployment.serve().await;
    let b = deployment.serve().await;
    let session = a.login(Delivery::Cookie).await;
    assert_eq!(b.verify_status(&session).await, StatusCode::OK);
    let logout = session
        .authorize(client().post(b.url("/v1/logout")))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert_eq!(a.verify_status(&session).await, StatusCode::UNAUTHORIZED);
}

/// How one test below changes a user.
#[derive(Debug, Clone, Copy)]
enum UserChange {
    /// `PATCH /v1/admin/users/{name}` on instance A with this body.
    Admin(&'static str),
    /// `DELETE /v1/admin/users/{name}` on instance A.
    AdminDelete,
    /// The user's own `POST /v1/password` on instance A (from a third session, which it renews).
    OwnPassword,
    /// `tessera user …` against the shared stores, with these arguments after the name.
    Cli(&'static str, &'static [&'static str]),
}

/// Every kind of change to a user that could alter a verify decision — roles, permissions,
/// disabled, password (reset by an administrator, changed by the user, set by the CLI),
/// deletion — made on one instance or by the CLI, and the very next verify of the user's
/// sessions on every instance is refused: the opaque cookie session and the JWT bearer session
/// alike. With sessions on Redis each session carries a snapshot of its user, so this is what
/// keeps that snapshot from ever serving a stale decision (see `tessera_store::SessionStore`):
/// it fails if any of these paths stops revoking. A login after a role change shows the new
/// roles on another instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_user_change_ends_the_users_sessions_on_every_instance() {
    let Some(shared) = Shared::deployment().await else {
        return;
    };
    let deployment = &shared.deployment;
    let (a, b, c) = tokio::join!(deployment.serve(), deployment.serve(), deployment.serve());
    let all = [&a, &b, &c];
    let admin = a.login(Delivery::Bearer).await;

    let changes = [
        UserChange::Admin(r#"{"roles":["viewer"]}"#),
        UserChange::Admin(r#"{"permissions":["docs:write"]}"#),
        UserChange::Admin(r#"{"disabled":true}"#),
        UserChange::Admin(r#"{"password":"another password 2"}"#),
        UserChange::AdminDelete,
        UserChange::OwnPassword,
        UserChange::Cli("set-roles", &["viewer"]),
        UserChange::Cli("set-permissions", &["docs:write"]),
        UserChange::Cli("disable", &[]),
        UserChange::Cli("passwd", &[]),
        UserChange::Cli("remove", &[]),
    ];
    for (i, change) in changes.into_iter().enumerate() {
        let name = format!("user-{i}");
        let created = admin
            .authorize(client().post(a.url("/v1/admin/users")))
            .json(&json!({
                "username": name, "password": PASSWORD,
                "roles": ["editor"], "permissions": ["docs:read"],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED, "{change:?}");
        let cookie = b.login_as(&name, PASSWORD, Delivery::Cookie).await;
        let bearer = c.login_as(&name, PASSWORD, Delivery::Bearer).await;
        for instance in all {
            for session in [&cookie, &bearer] {
                let response = session
                    .authorize(client().get(instance.url("/v1/verify?role=editor")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK, "{change:?} before");
            }
        }

        match change {
            UserChange::Admin(body) => {
                let response = admin
                    .authorize(client().patch(a.url(&format!("/v1/admin/users/{name}"))))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK, "{change:?}");
            }
            UserChange::AdminDelete => {
                let response = admin
                    .authorize(client().delete(a.url(&format!("/v1/admin/users/{name}"))))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::NO_CONTENT, "{change:?}");
            }
            UserChange::OwnPassword => {
                let third = a.login_as(&name, PASSWORD, Delivery::Bearer).await;
                let response = third
                    .authorize(client().post(a.url("/v1/password")))
                    .json(&json!({
                        "current_password": PASSWORD, "new_password": "another password 3",
                    }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK, "{change:?}");
                assert_ne!(
                    a.verify_status(&third).await,
                    StatusCode::OK,
                    "the old token"
                );
            }
            UserChange::Cli(command, args) => {
                let mut argv = vec!["user", command, name.as_str()];
                argv.extend(args);
                deployment.cli(&argv).await;
            }
        }

        for instance in all {
            for session in [&cookie, &bearer] {
                let response = instance.verify(session).await;
                assert_eq!(
                    response.status(),
                    StatusCode::UNAUTHORIZED,
                    "{change:?}: {:?} session on {}",
                    session.delivery,
                    instance.base
                );
                let code = problem_code(response).await;
                // A deleted user's sessions are gone with it: an opaque token is then unknown.
                let deleted = matches!(
                    change,
                    UserChange::AdminDelete | UserChange::Cli("remove", _)
                );
                let expected: &[&str] = if deleted {
                    &["token_revoked", "invalid_token"]
                } else {
                    &["token_revoked"]
                };
                assert!(expected.contains(&code.as_str()), "{change:?}: {code}");
            }
        }
        // The refresh token is dead too.
        let refresh = client()
            .post(b.url("/v1/refresh"))
            .json(&json!({ "refresh_token": bearer.refresh.clone().unwrap() }))
            .send()
            .await
            .unwrap();
        assert_eq!(refresh.status(), StatusCode::UNAUTHORIZED, "{change:?}");

        // After a role change, a new login carries the new roles on every instance.
        if matches!(change, UserChange::Admin(body) if body.contains("roles"))
            || matches!(change, UserChange::Cli("set-roles", _))
        {
            let fresh = a.login_as(&name, PASSWORD, Delivery::Cookie).await;
            for instance in [&b, &c] {
                for (role, status) in [
                    ("viewer", StatusCode::OK),
                    ("editor", StatusCode::FORBIDDEN),
                ] {
                    let response = fresh
                        .authorize(client().get(instance.url(&format!("/v1/verify?role={role}"))))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), status, "{change:?}: role {role}");
                }
            }
        }
    }
}

/// On Redis + PostgreSQL a verify reads Redis alone: with every connection to PostgreSQL cut,
/// three instances keep answering verifies of live sessions with 200 (opaque cookie and JWT
/// bearer, hundreds of them), a session logged out before the cut stays refused, and what does
/// need PostgreSQL (a login: the user's password) answers 503. Once PostgreSQL is reachable
/// again, logins work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifies_on_redis_need_no_postgres() {
    let (Some(database), Some(redis)) = (
        test_service_url("TESSERA_TEST_DATABASE_URL"),
        test_service_url("TESSERA_TEST_REDIS_URL"),
    ) else {
        return;
    };
    let schema = TestSchema::create(&database).await.unwrap();
    let prefix = RedisPrefix::new(&redis);
    let upstream = tokio_postgres_url::parse(&database);
    let relay = Relay::start(&upstream.host_port).await;
    let through_relay =
        schema
            .url()
            .replacen(&upstream.host_port, &format!("127.0.0.1:{}", relay.port), 1);
    let deployment = Deployment {
        dir: TempDir::new(),
        store: through_relay,
        sessions: prefix.url(),
        extra_env: Vec::new(),
    };
    let (a, b, c) = tokio::join!(deployment.serve(), deployment.serve(), deployment.serve());
    let all = [&a, &b, &c];
    let cookie = a.login(Delivery::Cookie).await;
    let bearer = b.login(Delivery::Bearer).await;
    let revoked = c.login(Delivery::Cookie).await;
    let logout = revoked
        .authorize(client().post(c.url("/v1/logout")))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);

    relay.cut();
    // PostgreSQL is gone for these instances: a login, which must read the user, fails closed.
    let login = client()
        .post(a.url("/v1/login"))
        .json(&json!({ "username": "admin", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::SERVICE_UNAVAILABLE);
    let mut answered = 0;
    for round in 0..50 {
        for instance in all {
            for session in [&cookie, &bearer] {
                assert_eq!(
                    instance.verify_status(session).await,
                    StatusCode::OK,
                    "round {round} on {}",
                    instance.base
                );
                answered += 1;
            }
            let response = instance.verify(&revoked).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
    }
    eprintln!("postgres cut: {answered} verifies answered 200 without it");

    relay.resume().await;
    within(Duration::from_secs(10), "logins to work again", || async {
        client()
            .post(a.url("/v1/login"))
            .json(&json!({ "username": "admin", "password": PASSWORD }))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
}

/// A passkey ceremony begun on one instance finishes on another, and one answer sent to both
/// at once signs in once; a TOTP code sent to both at once is accepted once; code guesses
/// spread over both are throttled as one account's. The single use and the count are the
/// shared store's (one atomic take, one compare-and-set, shared counters), not any
/// instance's memory.
#[tokio::test]
async fn passkey_answers_and_totp_codes_are_used_once_and_guesses_counted_across_instances() {
    let Some(mut shared) = Shared::deployment().await else {
        return;
    };
    let (port_a, port_b) = (spare_port(), spare_port());
    let origin = |port: u16| format!("http://localhost:{port}");
    shared.deployment.extra_env = vec![
        ("TESSERA_WEBAUTHN_RP_ID".into(), "localhost".into()),
        (
            "TESSERA_WEBAUTHN_ORIGINS".into(),
            format!("{},{}", origin(port_a), origin(port_b)),
        ),
    ];
    let deployment = &shared.deployment;
    let (a, b) = tokio::join!(deployment.serve_on(port_a), deployment.serve_on(port_b));
    let post = |instance: &Instance, path: &str, session: Option<&ClientSession>, body: Value| {
        let request = client().post(instance.url(path)).json(&body);
        let request = match session {
            Some(session) => session.authorize(request),
            None => request,
        };
        request.send()
    };
    let json_of = |response: reqwest::Response| async move {
        assert!(response.status().is_success(), "{}", response.status());
        response.json::<Value>().await.unwrap()
    };

    // The admin registers a passkey on A, in a page of A's origin.
    let (mut browser, _) = page_with_authenticator(&format!("{}/login", origin(port_a))).await;
    let admin = a.login(Delivery::Bearer).await;
    let begun = json_of(
        post(&a, "/v1/passkeys/registration", Some(&admin), json!({}))
            .await
            .unwrap(),
    )
    .await;
    let credential = create(&mut browser, &begun["options"]).await;
    let body = json!({ "ceremony": begun["ceremony"], "name": "key", "credential": credential });
    let registered = post(&a, "/v1/passkeys", Some(&admin), body).await.unwrap();
    assert_eq!(registered.status(), StatusCode::CREATED);

    // Begun on A, finished on B.
    let begun = json_of(
        post(&a, "/v1/login/passkey/options", None, json!({}))
            .await
            .unwrap(),
    )
    .await;
    let answer = get(&mut browser, &begun["options"]).await;
    let body = json!({ "ceremony": begun["ceremony"], "credential": answer, "delivery": "bearer" });
    let finished = post(&b, "/v1/login/passkey", None, body).await.unwrap();
    assert_eq!(
        finished.status(),
        StatusCode::OK,
        "a ceremony is any instance's"
    );

    // One answer, to both at once: one session.
    let begun = json_of(
        post(&a, "/v1/login/passkey/options", None, json!({}))
            .await
            .unwrap(),
    )
    .await;
    let answer = get(&mut browser, &begun["options"]).await;
    let body = json!({ "ceremony": begun["ceremony"], "credential": answer, "delivery": "bearer" });
    let (on_a, on_b) = tokio::join!(
        post(&a, "/v1/login/passkey", None, body.clone()),
        post(&b, "/v1/login/passkey", None, body)
    );
    let mut statuses = [on_a.unwrap().status(), on_b.unwrap().status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::UNAUTHORIZED]);
    browser.close().await;

    // A TOTP code, to both at once: accepted once.
    let admin = a.login(Delivery::Bearer).await;
    let begun = json_of(
        post(&a, "/v1/factors/totp", Some(&admin), json!({}))
            .await
            .unwrap(),
    )
    .await;
    let uri = begun["uri"].as_str().unwrap().to_owned();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    let code = code_at(&uri, now()).await;
    let confirmed = post(
        &b,
        "/v1/factors/totp/confirm",
        Some(&admin),
        json!({ "code": code }),
    )
    .await
    .unwrap();
    assert_eq!(confirmed.status(), StatusCode::OK);
    // The next time step's code (the confirmation spent this one).
    let next = code_at(&uri, now() + 30).await;
    let login = |instance: &Instance| {
        post(
            instance,
            "/v1/login",
            None,
            json!({ "username": "admin", "password": PASSWORD, "code": next, "delivery": "bearer" }),
        )
    };
    let (on_a, on_b) = tokio::join!(login(&a), login(&b));
    let mut statuses = [on_a.unwrap().status(), on_b.unwrap().status()];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::FORBIDDEN],
        "one code, one login"
    );

    // Guessing, spread over both instances: the count is the account's, in the shared store.
    // The refused code above was the first failure; four more reach the limit (5).
    let guess = |instance: &Instance| {
        post(
            instance,
            "/v1/login",
            None,
            json!({ "username": "admin", "password": PASSWORD, "code": "wrong-guess",
                "delivery": "bearer" }),
        )
    };
    for instance in [&a, &b, &a, &b] {
        let response = guess(instance).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "{}",
            instance.base
        );
    }
    for instance in [&a, &b] {
        let response = guess(instance).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "the limit holds on {}",
            instance.base
        );
    }
}

/// A DPoP proof is accepted once across the deployment: three instances behind one public
/// URL (as behind a load balancer) share the `jti`s they have seen through the store, so a
/// proof replayed on another instance is refused, and of one proof sent to all three at once
/// exactly one request passes. A refresh token bound on one instance needs the key on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpop_proof_is_accepted_once_whichever_instance_it_reaches() {
    use crate::dpop::ProofKey;
    let Some(mut shared) = Shared::deployment().await else {
        return;
    };
    let public = "https://auth.example";
    shared.deployment.extra_env = vec![("TESSERA_PUBLIC_URL".into(), public.into())];
    let deployment = &shared.deployment;
    let (a, b, c) = tokio::join!(deployment.serve(), deployment.serve(), deployment.serve());
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    let key = ProofKey::p256();
    let login_url = format!("{public}/v1/login");
    let response = client()
        .post(a.url("/v1/login"))
        .header("DPoP", key.proof("POST", &login_url, now(), None))
        .json(&json!({ "username": "admin", "password": PASSWORD, "delivery": "bearer" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let tokens: Value = response.json().await.unwrap();
    assert_eq!(tokens["token_type"], "DPoP");
    let token = tokens["access_token"].as_str().unwrap().to_owned();
    let session_url = format!("{public}/v1/session");
    let use_on = |instance: &Instance, proof: String| {
        client()
            .get(instance.url("/v1/session"))
            .header("Authorization", format!("DPoP {token}"))
            .header("DPoP", proof)
            .send()
    };

    // Used on A, replayed on B and on C.
    let proof = key.proof("GET", &session_url, now(), Some(&token));
    let statuses = [
        use_on(&a, proof.clone()).await.unwrap(),
        use_on(&b, proof.clone()).await.unwrap(),
        use_on(&c, proof).await.unwrap(),
    ];
    assert_eq!(statuses[0].status(), StatusCode::OK);
    for replay in statuses.into_iter().skip(1) {
        assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(problem_code(replay).await, "invalid_dpop_proof");
    }
    // One proof sent to all three at once, a few times over: one passes each time.
    for round in 0..5 {
        let proof = key.proof("GET", &session_url, now(), Some(&token));
        let (x, y, z) = tokio::join!(
            use_on(&a, proof.clone()),
            use_on(&b, proof.clone()),
            use_on(&c, proof)
        );
        let passed = [x, y, z]
            .into_iter()
            .filter(|r| r.as_ref().unwrap().status() == StatusCode::OK)
            .count();
        assert_eq!(passed, 1, "round {round}");
    }

    // The refresh token, bound on A: refused on B without the key, renewed on C with it.
    let refresh_url = format!("{public}/v1/refresh");
    let refresh = |instance: &Instance, proof: String| {
        client()
            .post(instance.url("/v1/refresh"))
            .header("DPoP", proof)
            .json(&json!({ "refresh_token": tokens["refresh_token"] }))
            .send()
    };
    let thief = ProofKey::ed25519();
    let stolen = refresh(&b, thief.proof("POST", &refresh_url, now(), None))
        .await
        .unwrap();
    assert_eq!(stolen.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem_code(stolen).await, "invalid_dpop_proof");
    let renewed = refresh(&c, key.proof("POST", &refresh_url, now(), None))
        .await
        .unwrap();
    assert_eq!(renewed.status(), StatusCode::OK);
    let renewed: Value = renewed.json().await.unwrap();
    assert_eq!(renewed["token_type"], "DPoP");
}
