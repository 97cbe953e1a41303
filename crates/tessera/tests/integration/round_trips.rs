//! Store operations per request, by deployment: what `docs/scaling.md` quotes, measured.
//!
//! Each deployment is assembled as `tessera serve` assembles it (the builder, the store
//! layers, the event bus), with the durable store wrapped in the counting layer
//! ([`Operations`]) and the event bus wrapped to count the notices it sends. On Redis the
//! sessions go to a `redis-server` of the test's own, so its `INFO` counters (commands,
//! bytes) hold this test's traffic alone; `RedisSessions::round_trips` counts the requests.
//!
//! The test asserts the verify path's cost — on Redis + PostgreSQL no durable-store operation
//! and no notice at all, on PostgreSQL alone one (a join), on SQLite one — and prints every
//! figure as a Markdown table (`--nocapture`).

use std::collections::BTreeMap;
use std::future::Future;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tessera_core::at_rest::MasterKey;
use tessera_server::builder::Stores;
use tessera_server::clock::ManualClock;
use tessera_server::service::{Actor, ClientInfo, Credentials, Delivery, Tessera, UserPatch};
use tessera_server::{Builder, Config};
use tessera_store::conformance::test_service_url;
use tessera_store::events::{EventBus, LocalBus, Notice, StoreEvent};
use tessera_store::{ByAbility, Layered, Store, StoreResult};
use tessera_store_postgres::{PgStore, TestSchema};
use tessera_store_redis::RedisSessions;
use tessera_store_sqlite::SqliteStore;
use tokio::process::{Child, Command};
use tokio::sync::broadcast;

use crate::support::{Operations, PASSWORD, TempDir, test_config};

/// An event bus that counts what it is asked to send (each notice on PostgreSQL is one
/// `pg_notify` statement).
struct CountingBus {
    inner: Arc<dyn EventBus>,
    published: AtomicU64,
}

#[async_trait]
impl EventBus for CountingBus {
    async fn publish(&self, event: &StoreEvent) -> StoreResult<()> {
        self.published.fetch_add(1, Ordering::SeqCst);
        self.inner.publish(event).await
    }

    fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.inner.subscribe()
    }
}

/// A `redis-server` of the test's own on a free port, killed when dropped.
struct OwnRedis {
    port: u16,
    /// The probe's own connection, opened once (a new one would add its handshake).
    probe: Mutex<redis::Connection>,
    _child: Child,
}

impl OwnRedis {
    async fn start() -> OwnRedis {
        let port = crate::external::spare_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed");
        for _ in 0..200 {
            let up = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok();
            if up {
                let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
                return OwnRedis {
                    port,
                    probe: Mutex::new(client.get_connection().unwrap()),
                    _child: child,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on {port} never answered");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Commands run (each command inside a script counted too), by name, and bytes in and out.
    fn counters(&self) -> (BTreeMap<String, u64>, u64, u64) {
        let mut conn = self.probe.lock().unwrap();
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .arg("commandstats")
            .query(&mut *conn)
            .unwrap();
        let mut commands = BTreeMap::new();
        let (mut input, mut output) = (0, 0);
        for line in info.lines() {
            if let Some(rest) = line.strip_prefix("cmdstat_") {
                let (name, stats) = rest.split_once(':').unwrap();
                let calls = stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))
                    .unwrap();
                commands.insert(name.to_owned(), calls.parse().unwrap());
            } else if let Some(n) = line.strip_prefix("total_net_input_bytes:") {
                input = n.trim().parse().unwrap();
            } else if let Some(n) = line.strip_prefix("total_net_output_bytes:") {
                output = n.trim().parse().unwrap();
            }
        }
        (commands, input, output)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
    RedisPostgres,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Sqlite => "SQLite",
            Kind::Postgres => "PostgreSQL",
            Kind::RedisPostgres => "Redis + PostgreSQL",
        }
    }
}

/// One deployment of one instance, with its probes.
struct Deployment {
    kind: Kind,
    service: Arc<Tessera>,
    clock: Arc<ManualClock>,
    ops: Arc<Layered<Operations>>,
    bus: Arc<CountingBus>,
    redis: Option<(Arc<RedisSessions>, OwnRedis)>,
    _schema: Option<TestSchema>,
    _dir: TempDir,
}

/// What the probes read at one moment.
struct Reading {
    ops: std::collections::HashMap<&'static str, usize>,
    published: u64,
    round_trips: u64,
    commands: BTreeMap<String, u64>,
    bytes_in: u64,
    bytes_out: u64,
}

/// What `n` repetitions of one request cost, in total.
#[derive(Default)]
struct Cost {
    n: u64,
    ops: BTreeMap<&'static str, u64>,
    published: u64,
    round_trips: u64,
    commands: BTreeMap<String, u64>,
    bytes_in: u64,
    bytes_out: u64,
}

impl Cost {
    fn per(&self, total: u64) -> String {
        let per = total as f64 / self.n as f64;
        if per.fract() == 0.0 {
            format!("{per:.0}")
        } else {
            format!("{per:.2}")
        }
    }

    fn breakdown<K: std::fmt::Display>(&self, counts: &BTreeMap<K, u64>) -> String {
        let total: u64 = counts.values().sum();
        if total == 0 {
            return "0".to_owned();
        }
        let items: Vec<String> = counts
            .iter()
            .map(|(name, count)| format!("{name} {}", self.per(*count)))
            .collect();
        format!("{} ({})", self.per(total), items.join(", "))
    }

    fn durable_ops(&self) -> f64 {
        self.ops.values().sum::<u64>() as f64 / self.n as f64
    }

    fn round_trips(&self) -> f64 {
        self.round_trips as f64 / self.n as f64
    }
}

impl Deployment {
    async fn start(kind: Kind) -> Option<Deployment> {
        let dir = TempDir::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        // Redis expires sessions by its own clock: the manual clock starts at the real time.
        let clock = Arc::new(ManualClock::new(now));
        let (durable, bus, schema): (Arc<dyn Store>, Arc<dyn EventBus>, _) = match kind {
            Kind::Sqlite => (
                Arc::new(SqliteStore::open(&dir.0.join("tessera.db")).unwrap()),
                Arc::new(LocalBus::new()),
                None,
            ),
            Kind::Postgres | Kind::RedisPostgres => {
                let database = test_service_url("TESSERA_TEST_DATABASE_URL")?;
                let schema = TestSchema::create(&database).await.unwrap();
                let pg = PgStore::open(schema.url()).await.unwrap();
                let bus = pg.event_bus();
                (Arc::new(pg), Arc::new(bus), Some(schema))
            }
        };
        let ops = Arc::new(Layered::new(durable, Operations::default()));
        let bus = Arc::new(CountingBus {
            inner: bus,
            published: AtomicU64::new(0),
        });
        let (store, redis): (Arc<dyn Store>, _) = match kind {
            Kind::RedisPostgres => {
                test_service_url("TESSERA_TEST_REDIS_URL")?;
                let server = OwnRedis::start().await;
                let sessions = Arc::new(
                    RedisSessions::connect(&server.url(), ops.clone())
                        .await
                        .unwrap(),
                );
                let split = ByAbility::split(ops.clone(), sessions.clone());
                (Arc::new(split), Some((sessions, server)))
            }
            _ => (ops.clone(), None),
        };
        let config = Config {
            data: dir.0.clone(),
            ..test_config()
        };
        let server = Builder::new(config)
            .stores(Stores::with_bus(store, bus.clone()))
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
        Some(Deployment {
            kind,
            service,
            clock,
            ops,
            bus,
            redis,
            _schema: schema,
            _dir: dir,
        })
    }

    fn read(&self) -> Reading {
        let (round_trips, (commands, bytes_in, bytes_out)) = match &self.redis {
            Some((sessions, server)) => (sessions.round_trips(), server.counters()),
            None => (0, (BTreeMap::new(), 0, 0)),
        };
        Reading {
            ops: self.ops.layer().all(),
            published: self.bus.published.load(Ordering::SeqCst),
            round_trips,
            commands,
            bytes_in,
            bytes_out,
        }
    }

    /// Runs `request` once and adds what it cost to `cost` (the probes' own reads of Redis
    /// are taken out: two readings back to back first measure what one reading costs).
    async fn measure<T, Fut: Future<Output = T>>(
        &self,
        cost: &mut Cost,
        request: impl FnOnce() -> Fut,
    ) -> T {
        let calibration = self.read();
        let before = self.read();
        let value = request().await;
        let after = self.read();
        cost.n += 1;
        for (name, count) in &after.ops {
            let count = count - before.ops.get(name).copied().unwrap_or(0);
            if count > 0 {
                *cost.ops.entry(*name).or_default() += count as u64;
            }
        }
        cost.published += after.published - before.published;
        cost.round_trips += after.round_trips - before.round_trips;
        for (name, calls) in &after.commands {
            let was = before.commands.get(name).copied().unwrap_or(0);
            let probe = before.commands.get(name).copied().unwrap_or(0)
                - calibration.commands.get(name).copied().unwrap_or(0);
            let count = calls.saturating_sub(was).saturating_sub(probe);
            if count > 0 {
                *cost.commands.entry(name.clone()).or_default() += count;
            }
        }
        let probe_in = before.bytes_in - calibration.bytes_in;
        let probe_out = before.bytes_out - calibration.bytes_out;
        cost.bytes_in += (after.bytes_in - before.bytes_in).saturating_sub(probe_in);
        cost.bytes_out += (after.bytes_out - before.bytes_out).saturating_sub(probe_out);
        value
    }

    async fn login(&self, delivery: Delivery) -> Credentials {
        self.service
            .login(
                "alice",
                PASSWORD,
                None,
                delivery,
                ClientInfo::default(),
                None,
            )
            .await
            .unwrap()
    }
}

/// The figures of one deployment, one row per request kind.
struct Table {
    rows: Vec<(String, Cost)>,
}

impl Table {
    fn print(&self, kind: Kind) {
        eprintln!(
            "\n{}\n\n| request | durable-store operations | notices (pg_notify) | Redis round \
             trips | Redis commands | bytes to / from Redis |\n|---|---|---:|---:|---|---:|",
            kind.name()
        );
        for (what, cost) in &self.rows {
            eprintln!(
                "| {what} | {} | {} | {} | {} | {} / {} |",
                cost.breakdown(&cost.ops),
                cost.per(cost.published),
                cost.per(cost.round_trips),
                cost.breakdown(&cost.commands),
                cost.per(cost.bytes_in),
                cost.per(cost.bytes_out),
            );
        }
    }

    fn get(&self, what: &str) -> &Cost {
        &self.rows.iter().find(|(w, _)| w == what).unwrap().1
    }
}

const REPEAT: usize = 20;

/// Every request kind on one deployment.
async fn figures(d: &Deployment) -> Table {
    let mut rows = Vec::new();
    let service = &d.service;

    let mut cookie_login = Cost::default();
    let mut cookies = Vec::new();
    for _ in 0..REPEAT {
        let c = d
            .measure(&mut cookie_login, || d.login(Delivery::Cookie))
            .await;
        cookies.push(c);
    }
    let mut bearer_login = Cost::default();
    let mut bearers = Vec::new();
    for _ in 0..REPEAT {
        let c = d
            .measure(&mut bearer_login, || d.login(Delivery::Bearer))
            .await;
        bearers.push(c);
    }

    let mut opaque = Cost::default();
    for _ in 0..5 {
        for c in &cookies {
            let token = c.access_token.clone();
            d.measure(&mut opaque, || service.authenticate(&token))
                .await
                .unwrap();
        }
    }
    let mut jwt_first = Cost::default();
    for c in &bearers {
        let token = c.access_token.clone();
        d.measure(&mut jwt_first, || service.authenticate(&token))
            .await
            .unwrap();
    }
    let mut jwt_cached = Cost::default();
    for _ in 0..5 {
        for c in &bearers {
            let token = c.access_token.clone();
            d.measure(&mut jwt_cached, || service.authenticate(&token))
                .await
                .unwrap();
        }
    }
    // Past the activity-write interval (60 s): the first verify of each session writes.
    d.clock.advance(61);
    let mut touching = Cost::default();
    for c in &cookies {
        let token = c.access_token.clone();
        d.measure(&mut touching, || service.authenticate(&token))
            .await
            .unwrap();
    }

    let mut refresh = Cost::default();
    let mut renewed = Vec::new();
    for c in &bearers {
        let token = c.refresh_token.clone().unwrap();
        let pair = d
            .measure(&mut refresh, || {
                service.refresh(&token, ClientInfo::default(), None)
            })
            .await
            .unwrap();
        renewed.push(pair);
    }

    let mut logout = Cost::default();
    for c in &cookies {
        let identity = service.authenticate(&c.access_token).await.unwrap();
        d.measure(&mut logout, || {
            service.logout(&identity, ClientInfo::default())
        })
        .await
        .unwrap();
    }

    // An administrator changes the roles of a user with one session (a user of its own, so
    // its session index holds that one session).
    let mut role_change = Cost::default();
    let cli = Actor::cli();
    for i in 0..5 {
        let name = format!("user-{i}");
        service
            .create_user(&cli, &name, PASSWORD, vec![], vec![])
            .await
            .unwrap();
        service
            .login(
                &name,
                PASSWORD,
                None,
                Delivery::Cookie,
                ClientInfo::default(),
                None,
            )
            .await
            .unwrap();
        let patch = UserPatch {
            roles: Some(vec!["viewer".to_owned()]),
            ..UserPatch::default()
        };
        d.measure(&mut role_change, || service.update_user(&cli, &name, patch))
            .await
            .unwrap();
    }

    rows.push(("login, cookie (opaque)".to_owned(), cookie_login));
    rows.push(("login, bearer (JWT + refresh)".to_owned(), bearer_login));
    rows.push(("**verify, opaque**".to_owned(), opaque));
    rows.push(("**verify, JWT first seen**".to_owned(), jwt_first));
    rows.push(("**verify, JWT seen before**".to_owned(), jwt_cached));
    rows.push((
        "verify, opaque, activity write due (once per session per 60 s)".to_owned(),
        touching,
    ));
    rows.push(("refresh (rotation)".to_owned(), refresh));
    rows.push(("logout".to_owned(), logout));
    rows.push((
        "admin role change (user with 1 session)".to_owned(),
        role_change,
    ));
    Table { rows }
}

/// The verify path's store operations per request on each deployment: Redis + PostgreSQL
/// verifies touch Redis alone (no PostgreSQL operation, no notice, one Redis round trip on a
/// single node); PostgreSQL alone and SQLite answer with one store operation (a join). Prints every
/// request kind's figures (`docs/scaling.md`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_operations_per_request_by_deployment() {
    let mut deployments = Vec::new();
    for kind in [Kind::Sqlite, Kind::Postgres, Kind::RedisPostgres] {
        match Deployment::start(kind).await {
            Some(d) => deployments.push(d),
            None => eprintln!("skipping {}: its service is not configured", kind.name()),
        }
    }
    for d in &deployments {
        let table = figures(d).await;
        table.print(d.kind);
        let verifies = [
            "**verify, opaque**",
            "**verify, JWT first seen**",
            "**verify, JWT seen before**",
        ];
        for what in verifies {
            let cost = table.get(what);
            assert_eq!(cost.published, 0, "{} {what}: notices", d.kind.name());
            let ops = cost.durable_ops();
            match d.kind {
                // Not one PostgreSQL statement: the session and its user's snapshot are in
                // Redis, read in one request (by token: the pointer and the session in one
                // script on a single node; a cluster takes two, see the Redis store's tests).
                Kind::RedisPostgres => {
                    assert_eq!(ops, 0.0, "{what}: {:?}", cost.ops);
                    assert_eq!(cost.round_trips(), 1.0, "{what}: round trips");
                }
                // The session joined with its user: one query.
                Kind::Postgres | Kind::Sqlite => {
                    assert_eq!(ops, 1.0, "{} {what}: {:?}", d.kind.name(), cost.ops);
                }
            }
        }
        // An activity write adds one write to the session's store, nothing else.
        let touching = table.get("verify, opaque, activity write due (once per session per 60 s)");
        match d.kind {
            Kind::RedisPostgres => {
                assert_eq!(touching.durable_ops(), 0.0, "{:?}", touching.ops);
                assert_eq!(touching.round_trips(), 2.0);
            }
            Kind::Postgres | Kind::Sqlite => assert_eq!(touching.durable_ops(), 2.0),
        }
    }
}
