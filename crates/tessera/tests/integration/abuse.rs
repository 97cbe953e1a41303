//! Login throttling and enumeration resistance (issue 7); throttling that holds under
//! concurrency, covers current-password checks and counts IPv6 clients per network (issue 11).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tessera_store::conformance::test_service_url;
use tessera_store::{
    AuditEvent, AuditQuery, ByAbility, Layer, Layered, Store, StoreFuture, StoreResult,
};
use tessera_store_postgres::{PgStore, TestSchema};
use tessera_store_redis::RedisSessions;
use tokio::sync::watch;

use crate::support::*;

async fn attempt(
    server: &TestServer,
    username: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> Response {
    let mut request = server
        .client
        .post(server.url("/v1/login"))
        .json(&json!({ "username": username, "password": password, "delivery": "bearer" }));
    if let Some(ip) = forwarded_for {
        request = request.header("x-forwarded-for", ip);
    }
    request.send().await.unwrap()
}

/// Status, the headers a client could tell apart, and the body.
async fn observable(response: Response) -> (StatusCode, Option<String>, Value) {
    let status = response.status();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, response.json().await.unwrap())
}

/// `attempt`, asserting the answer of a set-up step.
async fn fail_once(server: &TestServer, username: &str, forwarded_for: Option<&str>) {
    let response = attempt(server, username, "wrong password", forwarded_for).await;
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "set-up failure of {username} from {forwarded_for:?}"
    );
}

#[tokio::test]
async fn twenty_wrong_passwords_lock_at_the_threshold_and_the_right_one_is_refused_too() {
    let server = TestServer::start().await;
    for i in 1..=20 {
        let response = attempt(&server, "alice", "wrong password", None).await;
        if i <= 10 {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
        } else {
            assert_eq!(
                response.status(),
                StatusCode::TOO_MANY_REQUESTS,
                "attempt {i}"
            );
            assert_eq!(response.headers()["retry-after"], "30", "attempt {i}");
            assert_eq!(problem_code(response).await, "rate_limited");
        }
    }
    // The right password gets exactly the same answer while locked: no oracle.
    let locked_wrong = observable(attempt(&server, "alice", "wrong password", None).await).await;
    let locked_right = observable(attempt(&server, "alice", PASSWORD, None).await).await;
    assert_eq!(locked_right, locked_wrong);
    server.advance(29);
    assert_eq!(
        attempt(&server, "alice", PASSWORD, None).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    server.advance(1);
    assert_eq!(
        attempt(&server, "alice", PASSWORD, None).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn lockouts_double_with_every_further_failure_up_to_the_longest() {
    // A window longer than all the lockouts together, so the count never starts over.
    let server =
        TestServer::start_with(|c| c.login_failure_window = Duration::from_secs(3600)).await;
    for _ in 0..10 {
        fail_once(&server, "alice", None).await;
    }
    let mut lockout = 30;
    for expected in [60, 120, 240, 480, 900, 900] {
        server.advance(lockout - 1);
        let early = attempt(&server, "alice", PASSWORD, None).await;
        assert_eq!(early.status(), StatusCode::TOO_MANY_REQUESTS, "{lockout} s");
        server.advance(1);
        fail_once(&server, "alice", None).await;
        let response = attempt(&server, "alice", PASSWORD, None).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers()["retry-after"],
            expected.to_string().as_str(),
            "after a lockout of {lockout} s"
        );
        lockout = expected;
    }
}

#[tokio::test]
async fn unknown_wrong_disabled_and_locked_answers_are_identical() {
    let server = TestServer::start().await;
    server
        .service
        .create_user(
            &tessera_server::service::Actor::cli(),
            "dora",
            PASSWORD,
            vec![],
            vec![],
        )
        .await
        .unwrap();
    let patch = tessera_server::service::UserPatch {
        disabled: Some(true),
        ..Default::default()
    };
    server
        .service
        .update_user(&tessera_server::service::Actor::cli(), "dora", patch)
        .await
        .unwrap();

    let wrong = observable(attempt(&server, "alice", "wrong password", None).await).await;
    let unknown = observable(attempt(&server, "nobody", "wrong password", None).await).await;
    let disabled = observable(attempt(&server, "dora", PASSWORD, None).await).await;
    assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown, wrong);
    assert_eq!(disabled, wrong);

    for name in ["alice", "nobody", "dora"] {
        for _ in 0..9 {
            fail_once(&server, name, None).await;
        }
    }
    let locked_known = observable(attempt(&server, "alice", PASSWORD, None).await).await;
    let locked_unknown = observable(attempt(&server, "nobody", PASSWORD, None).await).await;
    let locked_disabled = observable(attempt(&server, "dora", PASSWORD, None).await).await;
    assert_eq!(locked_known.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(locked_unknown, locked_known);
    assert_eq!(locked_disabled, locked_known);
}

#[tokio::test]
async fn rotating_forwarded_for_from_an_untrusted_peer_does_not_bypass() {
    // Not behind a proxy: X-Forwarded-For is the client's own claim and is ignored.
    let server = TestServer::start().await;
    for i in 0..10 {
        fail_once(&server, "alice", Some(&format!("198.51.100.{i}"))).await;
    }
    let response = attempt(&server, "alice", PASSWORD, Some("203.0.113.99")).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_lock_is_per_client_so_the_user_is_not_locked_out_everywhere() {
    let server = TestServer::start_with(|c| c.behind_proxy = true).await;
    for _ in 0..10 {
        fail_once(&server, "alice", Some("198.51.100.7")).await;
    }
    assert_eq!(
        attempt(&server, "alice", PASSWORD, Some("198.51.100.7"))
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the attacker's address is locked"
    );
    let response = attempt(&server, "alice", PASSWORD, Some("203.0.113.5")).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the real user elsewhere still logs in"
    );
}

#[tokio::test]
async fn one_address_spraying_many_accounts_is_refused() {
    let server = TestServer::start_with(|c| c.login_max_failures_per_address = 5).await;
    for i in 0..5 {
        let response = attempt(&server, &format!("user{i}"), "Winter2026!", None).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let response = attempt(&server, "alice", PASSWORD, None).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn successful_logins_do_not_use_up_the_address_or_global_budget() {
    let server = TestServer::start_with(|c| {
        c.login_max_failures_per_address = 3;
        c.login_max_failures_global = 3;
    })
    .await;
    for i in 0..10 {
        let response = attempt(&server, "alice", PASSWORD, None).await;
        assert_eq!(response.status(), StatusCode::OK, "login {i}");
    }
    for _ in 0..3 {
        fail_once(&server, "nobody", None).await;
    }
    let response = attempt(&server, "alice", PASSWORD, None).await;
    assert_eq!(
        response.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "failures still count"
    );
}

// ------------------------------------------------------------------ the global ceiling

#[tokio::test]
async fn the_global_ceiling_refuses_the_failing_network_but_not_an_untouched_client() {
    let server = TestServer::start_with(|c| {
        c.behind_proxy = true;
        c.login_max_failures_global = 3;
    })
    .await;
    // One attacker rotating addresses inside its /64 trips the ceiling.
    for i in 1..=3 {
        fail_once(&server, "alice", Some(&format!("2001:db8:bad:1::{i:x}"))).await;
    }
    for (who, ip) in [
        ("alice", "2001:db8:bad:1::ff"),
        ("bob", "2001:db8:bad:1:ffff::1"),
    ] {
        let response = attempt(&server, who, PASSWORD, Some(ip)).await;
        assert_eq!(
            response.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "the attacking network is refused ({ip})"
        );
        assert_eq!(problem_code(response).await, "rate_limited");
    }
    // Every user elsewhere still logs in while the ceiling holds.
    for ip in ["203.0.113.5", "2001:db8:600d::1"] {
        let response = attempt(&server, "alice", PASSWORD, Some(ip)).await;
        assert_eq!(response.status(), StatusCode::OK, "untouched client {ip}");
    }
    // A distributed attack gets one guess per fresh network while the ceiling holds.
    fail_once(&server, "admin", Some("198.51.100.20")).await;
    let second = attempt(&server, "admin", "wrong password", Some("198.51.100.20")).await;
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: i64 = second.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Once the minute has passed, the attacking network's own budgets apply again.
    server.advance(60);
    let response = attempt(&server, "alice", PASSWORD, Some("2001:db8:bad:1::ff")).await;
    assert_eq!(response.status(), StatusCode::OK);
}

// ------------------------------------------------------------------ client networks

#[tokio::test]
async fn addresses_rotating_inside_one_ipv6_64_share_one_counter() {
    let server = TestServer::start_with(|c| c.behind_proxy = true).await;
    for i in 1..=10 {
        fail_once(&server, "alice", Some(&format!("2001:db8:1:2::{i:x}"))).await;
    }
    let inside = attempt(
        &server,
        "alice",
        PASSWORD,
        Some("2001:db8:1:2:ffff:ffff:ffff:ffff"),
    )
    .await;
    assert_eq!(
        inside.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a fresh address in the same /64 is the same client"
    );
    let next_network = attempt(&server, "alice", PASSWORD, Some("2001:db8:1:3::1")).await;
    assert_eq!(
        next_network.status(),
        StatusCode::OK,
        "the neighbouring /64 is another client"
    );
}

#[tokio::test]
async fn spraying_from_rotating_addresses_inside_one_64_hits_the_address_limit() {
    let server = TestServer::start_with(|c| {
        c.behind_proxy = true;
        c.login_max_failures_per_address = 5;
    })
    .await;
    for i in 0..5 {
        let ip = format!("2001:db8:7:7::{:x}", i + 1);
        fail_once(&server, &format!("user{i}"), Some(&ip)).await;
    }
    let response = attempt(&server, "alice", PASSWORD, Some("2001:db8:7:7::99")).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn the_ipv6_prefix_is_configurable() {
    let server = TestServer::start_with(|c| {
        c.behind_proxy = true;
        c.login_ipv6_prefix = 128;
    })
    .await;
    for _ in 0..10 {
        fail_once(&server, "alice", Some("2001:db8:1:2::a")).await;
    }
    let locked = attempt(&server, "alice", PASSWORD, Some("2001:db8:1:2::a")).await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    let other = attempt(&server, "alice", PASSWORD, Some("2001:db8:1:2::b")).await;
    assert_eq!(other.status(), StatusCode::OK, "/128: each address apart");
}

#[tokio::test]
async fn an_ipv4_mapped_address_shares_the_ipv4_counter() {
    let server = TestServer::start_with(|c| c.behind_proxy = true).await;
    for i in 0..10 {
        let ip = if i % 2 == 0 {
            "::ffff:198.51.100.7"
        } else {
            "198.51.100.7"
        };
        fail_once(&server, "alice", Some(ip)).await;
    }
    for ip in ["198.51.100.7", "::ffff:198.51.100.7", "::ffff:c633:6407"] {
        let response = attempt(&server, "alice", PASSWORD, Some(ip)).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "{ip}");
    }
    let response = attempt(&server, "alice", PASSWORD, Some("198.51.100.8")).await;
    assert_eq!(response.status(), StatusCode::OK);
}

// ------------------------------------------------------------------ current-password checks

async fn change_password(server: &TestServer, session: &ClientSession, current: &str) -> Response {
    session
        .authorize(server.client.post(server.url("/v1/password")))
        .json(&json!({ "current_password": current, "new_password": "a brand new secret" }))
        .send()
        .await
        .unwrap()
}

async fn events_of(server: &TestServer, kind: &str) -> Vec<AuditEvent> {
    let query = AuditQuery {
        user: Some("alice".into()),
        kind: Some(kind.parse().unwrap()),
        limit: 1000,
        ..AuditQuery::default()
    };
    server.service.store().audit_events(&query).await.unwrap()
}

#[tokio::test]
async fn a_stolen_session_cannot_guess_the_current_password_past_the_threshold() {
    let server = TestServer::start().await;
    let session = server.session("alice", Delivery::Bearer).await;
    for i in 1..=10 {
        let response = change_password(&server, &session, &format!("guess {i}")).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "guess {i}");
        assert_eq!(problem_code(response).await, "invalid_credentials");
    }
    let right = change_password(&server, &session, PASSWORD).await;
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(right.headers()["retry-after"], "30");
    assert_eq!(problem_code(right).await, "rate_limited");
    // The same counters as logins: the guesses lock this client's logins as well.
    let login = attempt(&server, "alice", PASSWORD, None).await;
    assert_eq!(login.status(), StatusCode::TOO_MANY_REQUESTS);

    let failed = events_of(&server, "reauth.failed").await;
    assert_eq!(failed.len(), 10, "every wrong current password is audited");
    assert!(failed.iter().all(|e| e.actor.as_deref() == Some("alice")
        && e.subject.as_deref() == Some("alice")
        && e.ip.is_some()));
    assert_eq!(events_of(&server, "reauth.throttled").await.len(), 1);
    assert!(events_of(&server, "password.changed").await.is_empty());

    // The session still works, and after the lockout the right password changes it.
    server.advance(30);
    let changed = change_password(&server, &session, PASSWORD).await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(events_of(&server, "password.changed").await.len(), 1);
}

// ------------------------------------------------------------------ concurrent bursts

/// Makes the first `limit` user look-ups wait until released: it stands in for a slow
/// password check, holding attempts that got past the throttle before any was settled (the
/// login looks the user up right before it checks the password). Look-ups past the limit go
/// straight through.
struct Parking {
    /// How many look-ups to park (0 until the set-up is done).
    limit: AtomicUsize,
    /// Look-ups since the limit was set, parked or not.
    entered: AtomicUsize,
    released: watch::Sender<bool>,
}

impl Parking {
    fn new() -> Parking {
        Parking {
            limit: AtomicUsize::new(0),
            entered: AtomicUsize::new(0),
            released: watch::Sender::new(false),
        }
    }

    fn park(&self, limit: usize) {
        self.limit.store(limit, Ordering::SeqCst);
    }

    fn entered(&self) -> usize {
        self.entered.load(Ordering::SeqCst)
    }

    fn release(&self) {
        self.released.send_replace(true);
    }
}

impl Layer for Parking {
    async fn around<'a, T: Send + 'a>(
        &'a self,
        operation: &'static str,
        call: StoreFuture<'a, T>,
    ) -> StoreResult<T> {
        let limit = self.limit.load(Ordering::SeqCst);
        if operation == "user_by_name"
            && limit > 0
            && self.entered.fetch_add(1, Ordering::SeqCst) < limit
        {
            let mut released = self.released.subscribe();
            // An error means the sender is gone: nothing left to wait for.
            let _ = released.wait_for(|r| *r).await;
        }
        call.await
    }
}

/// A store whose user look-ups are parked (see [`Parking`]).
type ParkingStore = Layered<Parking>;

/// Where the counters of a burst test live.
enum Backend {
    Sqlite,
    Postgres,
    Redis,
}

/// A server at a threshold of [`THRESHOLD`] on `backend`, its user look-ups parked; `None` when
/// the backend's service is not configured (outside CI).
struct Burst {
    server: TestServer,
    store: Arc<ParkingStore>,
    _schema: Option<TestSchema>,
    redis: Option<(String, String)>,
}

const THRESHOLD: u32 = 5;

impl Burst {
    async fn start(backend: Backend) -> Option<Burst> {
        let mut schema = None;
        let mut redis = None;
        let prepared: Option<Arc<dyn Store>> = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let database = test_service_url("TESSERA_TEST_DATABASE_URL")?;
                let created = TestSchema::create(&database).await.unwrap();
                let store = PgStore::open(created.url()).await.unwrap();
                schema = Some(created);
                Some(Arc::new(store))
            }
            Backend::Redis => None,
        };
        let sessions = match backend {
            Backend::Redis => {
                let base = test_service_url("TESSERA_TEST_REDIS_URL")?;
                let prefix = format!("tessera-abuse-{}", tessera_core::random::id().unwrap());
                let url = format!("{base}?prefix={prefix}");
                redis = Some((base, prefix));
                Some(url)
            }
            _ => None,
        };
        let mut parking = None;
        let server = TestServer::start_custom(
            |c| {
                c.behind_proxy = true;
                c.login_max_failures = THRESHOLD;
            },
            T0,
            |sqlite| {
                let inner: Arc<dyn Store> = match (prepared, sessions) {
                    (Some(store), _) => store,
                    (None, Some(url)) => {
                        let durable: Arc<dyn Store> = Arc::new(sqlite);
                        // Redis reads its sessions' users from the server's SQLite store, which
                        // exists only here, inside this synchronous closure.
                        let sessions = tokio::task::block_in_place(|| {
                            tokio::runtime::Handle::current()
                                .block_on(RedisSessions::connect(&url, durable.clone()))
                        })
                        .unwrap();
                        Arc::new(ByAbility::split(durable, Arc::new(sessions)))
                    }
                    (None, None) => Arc::new(sqlite),
                };
                let store = Arc::new(Layered::new(inner, Parking::new()));
                parking = Some(Arc::clone(&store));
                store
            },
        )
        .await;
        let store = parking.unwrap();
        Some(Burst {
            server,
            store,
            _schema: schema,
            redis,
        })
    }

    /// Sends `count` wrong logins of alice at once and waits until each is either answered or
    /// parked before its password check. Returns the pending answers.
    async fn wrong_logins(&self, count: usize) -> Vec<tokio::task::JoinHandle<StatusCode>> {
        self.store.layer().park(count);
        let answered = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..count)
            .map(|_| {
                let client = self.server.client.clone();
                let url = self.server.url("/v1/login");
                let answered = Arc::clone(&answered);
                tokio::spawn(async move {
                    let status = client
                        .post(url)
                        .header("x-forwarded-for", "198.51.100.66")
                        .json(&json!({
                            "username": "alice",
                            "password": "wrong password",
                            "delivery": "bearer",
                        }))
                        .send()
                        .await
                        .unwrap()
                        .status();
                    answered.fetch_add(1, Ordering::SeqCst);
                    status
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.store.layer().entered() + answered.load(Ordering::SeqCst) < count {
            assert!(Instant::now() < deadline, "the burst never settled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tasks
    }

    async fn finish(self) {
        if let Some((base, prefix)) = &self.redis {
            let client = redis::Client::open(base.as_str()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}:*"))
                .query_async(&mut conn)
                .await
                .unwrap();
            if !keys.is_empty() {
                redis::cmd("DEL")
                    .arg(keys)
                    .query_async::<()>(&mut conn)
                    .await
                    .unwrap();
            }
        }
    }
}

async fn statuses(tasks: Vec<tokio::task::JoinHandle<StatusCode>>) -> (usize, usize) {
    let mut checked = 0;
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            StatusCode::UNAUTHORIZED => checked += 1,
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    (checked, refused)
}

/// N concurrent wrong logins at threshold T: exactly T reach the password check (401), every
/// other one is refused (429); then a right password inside a burst beyond the threshold is 429.
async fn a_burst_cannot_outrun_the_count(backend: Backend) {
    let Some(burst) = Burst::start(backend).await else {
        return;
    };
    let tasks = burst.wrong_logins(30).await;
    burst.store.layer().release();
    let (checked, refused) = statuses(tasks).await;
    assert_eq!(
        (checked, refused),
        (THRESHOLD as usize, 30 - THRESHOLD as usize),
        "of 30 concurrent guesses only the threshold's worth are checked"
    );
    let failures = burst
        .server
        .service
        .store()
        .audit_events(&AuditQuery {
            kind: Some("login.failed".parse().unwrap()),
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(failures.len(), THRESHOLD as usize);
    burst.finish().await;
}

async fn a_right_password_inside_a_burst_is_refused(backend: Backend) {
    let Some(burst) = Burst::start(backend).await else {
        return;
    };
    let tasks = burst.wrong_logins(29).await;
    // Every guess is counted, none settled: the right password comes past the threshold.
    let entered = burst.store.layer().entered();
    let right = attempt(&burst.server, "alice", PASSWORD, Some("198.51.100.66")).await;
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        burst.store.layer().entered(),
        entered,
        "refused before its password was looked at"
    );
    burst.store.layer().release();
    let (checked, _) = statuses(tasks).await;
    assert_eq!(checked, THRESHOLD as usize);
    // The real user elsewhere is unaffected.
    let elsewhere = attempt(&burst.server, "alice", PASSWORD, Some("203.0.113.5")).await;
    assert_eq!(elsewhere.status(), StatusCode::OK);
    burst.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_logins_past_the_threshold_are_refused_on_sqlite() {
    a_burst_cannot_outrun_the_count(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_logins_past_the_threshold_are_refused_on_postgres() {
    a_burst_cannot_outrun_the_count(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_logins_past_the_threshold_are_refused_on_redis() {
    a_burst_cannot_outrun_the_count(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_right_password_inside_a_burst_is_refused_on_sqlite() {
    a_right_password_inside_a_burst_is_refused(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_right_password_inside_a_burst_is_refused_on_postgres() {
    a_right_password_inside_a_burst_is_refused(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_right_password_inside_a_burst_is_refused_on_redis() {
    a_right_password_inside_a_burst_is_refused(Backend::Redis).await;
}

#[tokio::test]
async fn long_passwords_are_accepted_whole_and_never_truncated() {
    let server = TestServer::start().await;
    let long: String = "correct-horse-battery-staple-"
        .repeat(4)
        .chars()
        .take(100)
        .collect();
    server
        .service
        .create_user(
            &tessera_server::service::Actor::cli(),
            "longpw",
            &long,
            vec![],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        attempt(&server, "longpw", &long, None).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        attempt(&server, "longpw", &long[..72], None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let too_long = "p".repeat(1025);
    let response = attempt(&server, "longpw", &too_long, None).await;
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "refused before hashing"
    );
}

#[tokio::test]
async fn hashes_are_upgraded_on_login_when_parameters_rise() {
    use tessera_server::clock::SystemClock;
    use tessera_server::service::{Actor, ClientInfo, Delivery, Settings, Tessera};

    let dir = TempDir::new();
    let store = Arc::new(tessera_store_sqlite::SqliteStore::open(&dir.0.join("t.db")).unwrap());
    let master = tessera_core::at_rest::MasterKey::generate().unwrap();
    let service = |memory: u32| {
        let mut config = test_config();
        config.argon2_memory_kib = memory;
        let store = store.clone();
        let master = master.clone();
        async move {
            Tessera::new(
                store,
                Settings::from_config(&config),
                master.clone(),
                Arc::new(SystemClock),
            )
            .await
            .unwrap()
        }
    };
    let weak = service(64).await;
    weak.create_user(&Actor::cli(), "upgrade", PASSWORD, vec![], vec![])
        .await
        .unwrap();
    assert!(
        weak.user("upgrade")
            .await
            .unwrap()
            .password_hash
            .contains("m=64,")
    );

    let strong = service(256).await;
    let wrong = strong
        .login(
            "upgrade",
            "wrong password",
            None,
            Delivery::Bearer,
            ClientInfo::default(),
            None,
        )
        .await;
    assert!(wrong.is_err());
    assert!(
        strong
            .user("upgrade")
            .await
            .unwrap()
            .password_hash
            .contains("m=64,"),
        "no upgrade on failure"
    );
    strong
        .login(
            "upgrade",
            PASSWORD,
            None,
            Delivery::Bearer,
            ClientInfo::default(),
            None,
        )
        .await
        .unwrap();
    let upgraded = strong.user("upgrade").await.unwrap().password_hash;
    assert!(upgraded.contains("m=256,"), "{upgraded}");
    strong
        .login(
            "upgrade",
            PASSWORD,
            None,
            Delivery::Bearer,
            ClientInfo::default(),
            None,
        )
        .await
        .unwrap();
}
