//! A mixed load against a deployment of several instances behind one address (a round-robin
//! proxy): logins, verifies, refreshes and logouts from concurrent clients, with every logout's
//! token checked afterwards — a revoked token answered 200 after its logout returned is a
//! missed revocation, and the run reports how many there were (there must be none).
//!
//! Each client (a task, one per connection) holds a few sessions of its own user, half cookie
//! (opaque) and half bearer (JWT with a refresh token), and picks each request by weight:
//! verify (a random held session), refresh (a bearer session's refresh token), logout (then a
//! fresh login replaces the session), and a check of a token it logged out earlier (it must be
//! refused). Closed loop: each client sends its next request when the previous one is
//! answered, so the throughput is what the deployment (and this machine) serve.
//!
//! Beside the client's view (throughput, p50/p99 per request kind) it reads what the stores
//! did over the run: every Redis node's commands (`INFO commandstats`, commands inside scripts
//! included) and CPU, PostgreSQL's transactions and tuples on the run's database
//! (`pg_stat_database`) and the CPU of its backends, and the CPU of the processes given with
//! `--cpu` (from `/proc`), each per request served.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::Summary;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The deployment's address, e.g. `http://127.0.0.1:8080` (the proxy).
    pub url: String,
    /// The admin user's password (to create the load's users).
    pub admin_password: String,
    /// Concurrent clients (connections).
    pub clients: usize,
    /// How long to send requests.
    pub duration: Duration,
    /// Relative weights of verify, refresh, logout (+ login) and revoked-token check.
    pub weights: [u32; 4],
    /// Sessions each client holds.
    pub sessions_per_client: usize,
    /// Redis nodes (`host:port`) whose counters to read.
    pub redis_nodes: Vec<String>,
    /// PostgreSQL URL of the deployment's database, whose counters to read.
    pub database_url: Option<String>,
    /// Named processes whose CPU time to read (`name=pid,pid`).
    pub cpu: Vec<(String, Vec<u32>)>,
}

/// Request kinds, in the order of [`Options::weights`] (a login is counted on its own).
const KINDS: [&str; 6] = [
    "verify",
    "refresh",
    "logout",
    "revoked-check",
    "login",
    "verify-revoked-after-logout",
];

#[derive(Clone)]
struct Held {
    cookie: bool,
    access: String,
    refresh: Option<String>,
}

#[derive(Default)]
struct Tally {
    latencies: BTreeMap<&'static str, Vec<Duration>>,
    statuses: BTreeMap<(&'static str, u16), u64>,
    missed: Vec<String>,
    revoked_checks: u64,
    errors: u64,
}

struct Client {
    http: reqwest::Client,
    url: String,
    username: String,
}

impl Client {
    async fn login(&self, cookie: bool) -> Result<(Held, Duration, u16)> {
        let started = Instant::now();
        let delivery = if cookie { "cookie" } else { "bearer" };
        let response = self
            .http
            .post(format!("{}/v1/login", self.url))
            .json(&json!({ "username": self.username, "password": PASSWORD, "delivery": delivery }))
            .send()
            .await?;
        let status = response.status().as_u16();
        let elapsed = started.elapsed();
        if status != 200 {
            bail!("login answered {status}");
        }
        let held = if cookie {
            let value = response
                .headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|v| v.strip_prefix("__Host-tessera="))
                .and_then(|v| v.split(';').next())
                .context("a login without the session cookie")?
                .to_owned();
            Held {
                cookie: true,
                access: value,
                refresh: None,
            }
        } else {
            let body: Value = response.json().await?;
            Held {
                cookie: false,
                access: body["access_token"]
                    .as_str()
                    .context("no access token")?
                    .to_owned(),
                refresh: body["refresh_token"].as_str().map(str::to_owned),
            }
        };
        Ok((held, elapsed, status))
    }

    fn authorize(&self, request: reqwest::RequestBuilder, held: &Held) -> reqwest::RequestBuilder {
        if held.cookie {
            request.header("cookie", format!("__Host-tessera={}", held.access))
        } else {
            request.bearer_auth(&held.access)
        }
    }

    async fn verify(&self, held: &Held) -> Result<(u16, Duration)> {
        let started = Instant::now();
        let request = self.http.get(format!("{}/v1/verify", self.url));
        let response = self.authorize(request, held).send().await?;
        let status = response.status().as_u16();
        let _ = response.bytes().await?;
        Ok((status, started.elapsed()))
    }
}

const PASSWORD: &str = "mixed load password 1";

/// How late PostgreSQL may publish a backend's statistics (`PGSTAT_IDLE_INTERVAL`, 10 s).
const PG_STATS_LAG: Duration = Duration::from_secs(11);

/// Creates the load's users through the admin API (`mixed-N`); existing ones are kept.
async fn create_users(http: &reqwest::Client, options: &Options) -> Result<Vec<String>> {
    let response = http
        .post(format!("{}/v1/login", options.url))
        .json(&json!({ "username": "admin", "password": options.admin_password, "delivery": "bearer" }))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("admin login answered {}", response.status());
    }
    let body: Value = response.json().await?;
    let admin = body["access_token"].as_str().context("no admin token")?;
    let mut names = Vec::new();
    for n in 0..options.clients {
        let name = format!("mixed-{n}");
        let response = http
            .post(format!("{}/v1/admin/users", options.url))
            .bearer_auth(admin)
            .json(&json!({ "username": name, "password": PASSWORD, "roles": ["member"] }))
            .send()
            .await?;
        if !(response.status().is_success() || response.status().as_u16() == 409) {
            bail!("creating {name} answered {}", response.status());
        }
        names.push(name);
    }
    Ok(names)
}

/// A small xorshift generator: the choice of request needs no cryptographic randomness.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// When the clients run: `ready` counts the clients holding their sessions; they start at
/// `go` and stop at `stop`.
struct Phase {
    ready: AtomicU64,
    go: AtomicBool,
    stop: AtomicBool,
}

async fn client_loop(
    client: Client,
    options: Arc<Options>,
    phase: Arc<Phase>,
    tally: Arc<Mutex<Tally>>,
    seed: u64,
) -> Result<()> {
    let mut rng = Rng(seed | 1);
    let mut held = Vec::new();
    for i in 0..options.sessions_per_client {
        held.push(client.login(i % 2 == 0).await?.0);
    }
    phase.ready.fetch_add(1, Ordering::SeqCst);
    while !phase.go.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut revoked: VecDeque<Held> = VecDeque::new();
    let mut tally_here = Tally::default();
    let local = &mut tally_here;
    let total: u32 = options.weights.iter().sum();
    while !phase.stop.load(Ordering::Relaxed) {
        let mut pick = rng.below(u64::from(total)) as u32;
        let mut kind = 0;
        while pick >= options.weights[kind] {
            pick -= options.weights[kind];
            kind += 1;
        }
        let at = rng.below(held.len() as u64) as usize;
        let outcome: Result<()> = async {
            match kind {
                0 => {
                    let (status, took) = client.verify(&held[at]).await?;
                    record(local, "verify", status, took);
                }
                1 => {
                    let Some(i) = held.iter().position(|h| !h.cookie) else {
                        return Ok(());
                    };
                    let token = held[i].refresh.clone().context("no refresh token")?;
                    let started = Instant::now();
                    let response = client
                        .http
                        .post(format!("{}/v1/refresh", client.url))
                        .json(&json!({ "refresh_token": token }))
                        .send()
                        .await?;
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    record(local, "refresh", status, started.elapsed());
                    if status == 200 {
                        held[i].access = body["access_token"].as_str().unwrap_or("").to_owned();
                        held[i].refresh = body["refresh_token"].as_str().map(str::to_owned);
                    }
                }
                2 => {
                    let old = held[at].clone();
                    let started = Instant::now();
                    let request = client.http.post(format!("{}/v1/logout", client.url));
                    let response = client.authorize(request, &old).send().await?;
                    let status = response.status().as_u16();
                    record(local, "logout", status, started.elapsed());
                    if status == 204 {
                        // Acknowledged: from now on the token must be refused everywhere. The
                        // very next request checks it (on the next instance in the rotation).
                        let (status, took) = client.verify(&old).await?;
                        record(local, "verify-revoked-after-logout", status, took);
                        local.revoked_checks += 1;
                        if status == 200 {
                            local.missed.push(old.access.clone());
                        }
                        revoked.push_back(old.clone());
                        if revoked.len() > 16 {
                            revoked.pop_front();
                        }
                        let (fresh, took, status) = client.login(old.cookie).await?;
                        record(local, "login", status, took);
                        held[at] = fresh;
                    }
                }
                _ => {
                    let Some(old) = revoked.get(at % revoked.len().max(1)).cloned() else {
                        return Ok(());
                    };
                    let (status, took) = client.verify(&old).await?;
                    record(local, "revoked-check", status, took);
                    local.revoked_checks += 1;
                    if status == 200 {
                        local.missed.push(old.access.clone());
                    }
                }
            }
            Ok(())
        }
        .await;
        if outcome.is_err() {
            local.errors += 1;
        }
    }
    let local = tally_here;
    let mut tally = tally.lock().await;
    for (kind, mut times) in local.latencies {
        tally.latencies.entry(kind).or_default().append(&mut times);
    }
    for (key, count) in local.statuses {
        *tally.statuses.entry(key).or_default() += count;
    }
    tally.missed.extend(local.missed);
    tally.revoked_checks += local.revoked_checks;
    tally.errors += local.errors;
    Ok(())
}

fn record(tally: &mut Tally, kind: &'static str, status: u16, took: Duration) {
    tally.latencies.entry(kind).or_default().push(took);
    *tally.statuses.entry((kind, status)).or_default() += 1;
}

/// Counters read before and after the run.
#[derive(Debug, Default, Clone)]
struct Counters {
    redis_commands: BTreeMap<String, u64>,
    redis_cpu: f64,
    redis_net_in: u64,
    redis_net_out: u64,
    pg: Option<[i64; 6]>,
    pg_cpu: f64,
    cpu: BTreeMap<String, f64>,
}

fn proc_cpu(pid: u32) -> f64 {
    // utime and stime, fields 14 and 15 of /proc/PID/stat, in clock ticks (100 per second).
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

async fn read_counters(options: &Options) -> Result<Counters> {
    let mut counters = Counters::default();
    for node in &options.redis_nodes {
        let client = redis::Client::open(format!("redis://{node}"))?;
        let mut conn = client.get_connection()?;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .arg("cpu")
            .arg("stats")
            .query(&mut conn)?;
        for line in info.lines() {
            if let Some(rest) = line.strip_prefix("cmdstat_") {
                let Some((name, stats)) = rest.split_once(':') else {
                    continue;
                };
                let calls = stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                *counters.redis_commands.entry(name.to_owned()).or_default() += calls;
            }
            let value = |prefix: &str| {
                line.strip_prefix(prefix)
                    .and_then(|v| v.trim().parse::<f64>().ok())
            };
            if let Some(v) = value("used_cpu_sys:").or_else(|| value("used_cpu_user:")) {
                counters.redis_cpu += v;
            }
            if let Some(v) = value("total_net_input_bytes:") {
                counters.redis_net_in += v as u64;
            }
            if let Some(v) = value("total_net_output_bytes:") {
                counters.redis_net_out += v as u64;
            }
        }
    }
    if let Some(url) = &options.database_url {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let task = tokio::spawn(connection);
        client
            .execute("SELECT pg_stat_clear_snapshot()", &[])
            .await?;
        let row = client
            .query_one(
                "SELECT xact_commit + xact_rollback, tup_returned, tup_fetched, tup_inserted, \
                 tup_updated, tup_deleted FROM pg_stat_database WHERE datname = current_database()",
                &[],
            )
            .await?;
        let mut values = [0i64; 6];
        for (i, value) in values.iter_mut().enumerate() {
            *value = row.get(i);
        }
        counters.pg = Some(values);
        let pids = client
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
                 AND pid <> pg_backend_pid()",
                &[],
            )
            .await?;
        counters.pg_cpu = pids
            .iter()
            .map(|row| proc_cpu(u32::try_from(row.get::<_, i32>(0)).unwrap_or(0)))
            .sum();
        drop(client);
        let _ = task.await;
    }
    counters.cpu.insert(
        "load generator (this process)".to_owned(),
        proc_cpu(std::process::id()),
    );
    for (name, pids) in &options.cpu {
        counters
            .cpu
            .insert(name.clone(), pids.iter().map(|&p| proc_cpu(p)).sum());
    }
    Ok(counters)
}

/// Runs the load and prints its report (Markdown) on stdout.
pub async fn run(options: Options) -> Result<()> {
    let options = Arc::new(options);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(options.clients)
        .build()?;
    let users = create_users(&http, &options).await?;
    let phase = Arc::new(Phase {
        ready: AtomicU64::new(0),
        go: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    });
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut tasks = Vec::new();
    // Sessions are logged in first (not timed); the clock starts when every client holds its own.
    for (n, username) in users.into_iter().enumerate() {
        let client = Client {
            http: http.clone(),
            url: options.url.clone(),
            username,
        };
        let (options, phase, tally) = (options.clone(), phase.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let seed = 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(n as u64 + 1);
            client_loop(client, options, phase, tally, seed).await
        }));
    }
    // Every client logs its sessions in first (Argon2id: seconds for many clients) and waits.
    // The counters are read in quiet moments before and after the window: PostgreSQL
    // publishes a backend's statistics up to 10 s late when it goes idle.
    let deadline = Instant::now() + Duration::from_secs(300);
    while phase.ready.load(Ordering::SeqCst) < options.clients as u64 {
        if Instant::now() > deadline || tasks.iter().any(|t| t.is_finished()) {
            bail!("the clients could not log in");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(PG_STATS_LAG).await;
    let before = read_counters(&options).await?;
    phase.go.store(true, Ordering::SeqCst);
    let started = Instant::now();
    tokio::time::sleep(options.duration).await;
    phase.stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(PG_STATS_LAG).await;
    let after = read_counters(&options).await?;
    let tally = tally.lock().await;
    report(&options, &tally, &before, &after, elapsed);
    let missed = tally.missed.len();
    if missed > 0 {
        bail!("{missed} revoked token(s) answered 200 after their logout returned");
    }
    Ok(())
}

fn report(
    options: &Options,
    tally: &Tally,
    before: &Counters,
    after: &Counters,
    elapsed: Duration,
) {
    let seconds = elapsed.as_secs_f64();
    // Requests recorded are those sent inside the window; the stores' counters cover the
    // same window (give or take the requests in flight at its edges).
    let requests: u64 = tally.latencies.values().map(|v| v.len() as u64).sum();
    let per_request = |value: f64| value / requests.max(1) as f64;
    println!(
        "{} clients, {:.1} s, weights verify/refresh/logout+login/revoked-check = {:?}\n",
        options.clients, seconds, options.weights
    );
    println!("| request | count | per second | p50 (ms) | p99 (ms) | statuses |");
    println!("|---|---:|---:|---:|---:|---|");
    for kind in KINDS {
        let Some(times) = tally.latencies.get(kind) else {
            continue;
        };
        let mut times = times.clone();
        let Some(summary) = Summary::of(&mut times) else {
            continue;
        };
        let statuses: Vec<String> = tally
            .statuses
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, status), count)| format!("{status}×{count}"))
            .collect();
        println!(
            "| {kind} | {} | {:.0} | {:.2} | {:.2} | {} |",
            summary.count,
            summary.count as f64 / seconds,
            summary.p50.as_secs_f64() * 1e3,
            summary.p99.as_secs_f64() * 1e3,
            statuses.join(" ")
        );
    }
    println!(
        "| **all** | {requests} | **{:.0}** | | | client errors: {} |",
        requests as f64 / seconds,
        tally.errors
    );
    println!(
        "\nrevoked tokens checked after their logout returned: {}; answered 200: **{}**",
        tally.revoked_checks,
        tally.missed.len()
    );
    let commands: u64 =
        after.redis_commands.values().sum::<u64>() - before.redis_commands.values().sum::<u64>();
    let mut by_command: Vec<(String, u64)> = after
        .redis_commands
        .iter()
        .map(|(name, calls)| {
            (
                name.clone(),
                calls - before.redis_commands.get(name).copied().unwrap_or(0),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    by_command.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let top: Vec<String> = by_command
        .iter()
        .take(8)
        .map(|(name, n)| format!("{name} {:.2}", per_request(*n as f64)))
        .collect();
    println!("\n| per request served | value |\n|---|---:|");
    println!(
        "| Redis commands (all nodes, inside scripts included) | {:.2} ({}) |",
        per_request(commands as f64),
        top.join(", ")
    );
    println!(
        "| Redis bytes in / out | {:.0} / {:.0} |",
        per_request((after.redis_net_in - before.redis_net_in) as f64),
        per_request((after.redis_net_out - before.redis_net_out) as f64)
    );
    println!(
        "| Redis CPU (all nodes), µs | {:.1} |",
        per_request((after.redis_cpu - before.redis_cpu) * 1e6)
    );
    if let (Some(a), Some(b)) = (after.pg, before.pg) {
        let names = [
            "transactions",
            "tuples returned",
            "tuples fetched",
            "tuples inserted",
            "tuples updated",
            "tuples deleted",
        ];
        let values: Vec<String> = names
            .iter()
            .zip(a.iter().zip(b.iter()))
            .map(|(name, (a, b))| format!("{name} {:.3}", per_request((a - b) as f64)))
            .collect();
        println!(
            "| PostgreSQL (the run's database) | {} |",
            values.join(", ")
        );
        println!(
            "| PostgreSQL backends' CPU, µs | {:.1} |",
            per_request((after.pg_cpu - before.pg_cpu) * 1e6)
        );
    }
    for (name, cpu) in &after.cpu {
        let was = before.cpu.get(name).copied().unwrap_or(0.0);
        println!("| {name} CPU, µs | {:.1} |", per_request((cpu - was) * 1e6));
    }
}
