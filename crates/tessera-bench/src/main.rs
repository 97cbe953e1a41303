//! `tessera-bench`: the tools behind `docs/performance.md`.
//!
//! - `baseline`: the baseline HTTP server the load runs compare against.
//! - `embedded`: one handler with and without tessera-verify's layer, for the load runs.
//! - `argon2`: one Argon2id verification's time at the configured parameters, for the login
//!   ceiling (cores ÷ one hash's time).
//! - `scale`: seeds N live sessions into SQLite, PostgreSQL or Redis and measures verify latency
//!   and bytes/session.
//! - `report`: criterion's results as a table of ratios to the raw primitives.
//! - `mixed`: a mixed load (logins, verifies, refreshes, logouts) against a deployment behind
//!   one address, checking that no revoked token is accepted (`scripts/scaleout-load.sh`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use tessera_bench::{
    Fixture, PASSWORD, Summary, baseline, bench_config, embedded, micros, mixed, report, scale,
};
use tessera_core::password::{PasswordHasher, PasswordParams};
use tessera_server::Config;

/// The allocator the `tessera` binary uses, so the baselines served here (the bare axum
/// ceiling among them) are built the same way as the server they are compared with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "tessera-bench", about = "tessera's benchmark tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the baseline routes (/bare, /sha-map, /ed25519) until killed.
    Baseline {
        /// Address to listen on (loopback).
        #[arg(long, default_value = "127.0.0.1:18081")]
        listen: SocketAddr,
        /// Ed25519 public key (the JWK's `x`) for /ed25519.
        #[arg(long)]
        ed25519_x: Option<String>,
        /// An opaque token /sha-map accepts (repeatable).
        #[arg(long = "opaque-token")]
        opaque_tokens: Vec<String>,
    },
    /// Serve one handler twice until killed: `/plain` alone and `/verified` behind
    /// tessera-verify's layer, its keys from the JWKS of the tessera at `--tessera-url`.
    Embedded {
        /// Address to listen on (loopback).
        #[arg(long, default_value = "127.0.0.1:18082")]
        listen: SocketAddr,
        /// The tessera whose tokens are verified (its base URL).
        #[arg(long)]
        tessera_url: String,
    },
    /// Time Argon2id verifications at the parameters of the configuration (defaults:
    /// m=19456 KiB, t=2, p=1; TESSERA_ARGON2_* variables apply) and print the median.
    Argon2 {
        /// Verifications to time.
        #[arg(long, default_value_t = 15)]
        count: usize,
    },
    /// Seed live sessions into a fresh store (SQLite, PostgreSQL or Redis) and measure
    /// verification. PostgreSQL runs in a schema of its own and Redis under a key prefix of its
    /// own, both removed afterwards.
    Scale {
        /// The store to seed and measure.
        #[arg(long, value_enum, default_value = "sqlite")]
        store: scale::StoreKind,
        /// Directory for the SQLite database (an existing tessera.db in it is replaced); for
        /// Redis it holds the users and keys. Not used for PostgreSQL.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// PostgreSQL URL, for `--store postgres`.
        #[arg(long, env = "TESSERA_TEST_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// Redis URL (`redis://host:port[/db]`), for `--store redis`.
        #[arg(long, env = "TESSERA_TEST_REDIS_URL", hide_env_values = true)]
        redis_url: Option<String>,
        /// Live sessions to seed.
        #[arg(long)]
        sessions: u64,
        /// Sessions kept as samples for measuring.
        #[arg(long, default_value_t = 10_000)]
        samples: usize,
        /// Timed verifications per series.
        #[arg(long, default_value_t = 100_000)]
        lookups: usize,
        /// Keep the SQLite database afterwards (it is deleted by default). PostgreSQL schemas
        /// and Redis keys are always removed.
        #[arg(long)]
        keep: bool,
    },
    /// Call `Tessera::authenticate` in a loop (for profilers: perf, valgrind --tool=callgrind)
    /// and print the mean time per call.
    Loop {
        /// Which token: `opaque`, `jwt-cached` or `jwt-first-seen` (a fresh JWT per call,
        /// minted before the loop starts).
        #[arg(long, default_value = "opaque")]
        token: String,
        /// Calls.
        #[arg(long, default_value_t = 100_000)]
        iterations: u64,
        /// Distinct JWTs to cycle through for `jwt-cached` (each verified once before timing).
        #[arg(long, default_value_t = 1)]
        distinct: u64,
    },
    /// A mixed load of concurrent clients (logins, verifies, refreshes, logouts) against a
    /// deployment behind one address; prints throughput, p50/p99 and the stores' operations
    /// per request, and fails if a token is accepted after its logout returned.
    Mixed {
        /// The deployment's address (a round-robin proxy in front of the instances).
        #[arg(long)]
        url: String,
        /// The admin user's password (creates one user per client).
        #[arg(long, env = "TESSERA_ADMIN_PASSWORD", hide_env_values = true)]
        admin_password: String,
        /// Concurrent clients, one connection each.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Seconds of load.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Weights of verify, refresh, logout (followed by a check of the revoked token and a
        /// fresh login) and a check of a token revoked earlier, comma separated.
        #[arg(long, default_value = "940,30,10,20", value_delimiter = ',')]
        weights: Vec<u32>,
        /// Sessions each client holds (half cookie/opaque, half bearer/JWT).
        #[arg(long, default_value_t = 4)]
        sessions: usize,
        /// Redis nodes (host:port, comma separated) whose counters to read.
        #[arg(long, value_delimiter = ',')]
        redis_nodes: Vec<String>,
        /// The deployment's PostgreSQL URL, whose database counters to read.
        #[arg(long)]
        database_url: Option<String>,
        /// Processes whose CPU time to report: `name=pid,pid` (repeatable).
        #[arg(long = "cpu")]
        cpu: Vec<String>,
    },
    /// Print criterion's results with each function's ratio to its group's primitive.
    Report {
        /// Criterion's output directory (default $CARGO_TARGET_DIR/criterion).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Baseline {
            listen,
            ed25519_x,
            opaque_tokens,
        } => {
            if !listen.ip().is_loopback() {
                bail!("the baseline server listens on loopback only");
            }
            let state = baseline::Baseline::new(ed25519_x.as_deref(), &opaque_tokens)?;
            baseline::serve(listen, state)
        }
        Command::Embedded {
            listen,
            tessera_url,
        } => {
            if !listen.ip().is_loopback() {
                bail!("the embedded verifier's server listens on loopback only");
            }
            baseline::serve_router(listen, "embedded verifier", async move {
                Ok(embedded::router(&embedded::verifier(&tessera_url).await?))
            })
        }
        Command::Argon2 { count } => argon2(count),
        Command::Scale {
            store,
            dir,
            database_url,
            redis_url,
            sessions,
            samples,
            lookups,
            keep,
        } => {
            let outcome = scale::run(&scale::Options {
                store,
                dir: dir.clone(),
                database_url,
                redis_url,
                sessions,
                samples,
                lookups,
            });
            if let Some(dir) = dir.filter(|_| !keep) {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(dir.join(format!("tessera.db{suffix}")));
                }
            }
            print_scale(&outcome?);
            Ok(())
        }
        Command::Loop {
            token,
            iterations,
            distinct,
        } => verify_loop(&token, iterations, distinct),
        Command::Mixed {
            url,
            admin_password,
            clients,
            seconds,
            weights,
            sessions,
            redis_nodes,
            database_url,
            cpu,
        } => {
            let [verify, refresh, logout, check] = weights.as_slice() else {
                bail!("--weights takes four numbers: verify,refresh,logout,revoked-check");
            };
            let cpu = cpu
                .iter()
                .map(|item| {
                    let (name, pids) = item
                        .split_once('=')
                        .ok_or_else(|| anyhow::anyhow!("--cpu takes name=pid,pid"))?;
                    let pids = pids
                        .split(',')
                        .map(|p| p.trim().parse::<u32>())
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok((name.to_owned(), pids))
                })
                .collect::<Result<Vec<_>>>()?;
            let options = mixed::Options {
                url,
                admin_password,
                clients: clients.max(1),
                duration: Duration::from_secs(seconds),
                weights: [*verify, *refresh, *logout, *check],
                sessions_per_client: sessions.max(1),
                redis_nodes,
                database_url,
                cpu,
            };
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(mixed::run(options))
        }
        Command::Report { dir } => {
            let dir = dir.unwrap_or_else(report::default_dir);
            print!("{}", report::table(&report::read(&dir)?));
            Ok(())
        }
    }
}

fn argon2(count: usize) -> Result<()> {
    let config = Config::load(None, std::env::vars())?;
    let params = PasswordParams {
        memory_kib: config.argon2_memory_kib,
        iterations: config.argon2_iterations,
        parallelism: config.argon2_parallelism,
    };
    let hasher = PasswordHasher::new(params)?;
    let stored = hasher.hash(PASSWORD)?;
    let mut times: Vec<Duration> = (0..count.max(1))
        .map(|_| {
            let start = Instant::now();
            let ok = hasher.verify(PASSWORD, Some(&stored));
            (ok, start.elapsed())
        })
        .map(|(ok, t)| {
            if ok {
                Ok(t)
            } else {
                bail!("verification failed")
            }
        })
        .collect::<Result<_>>()?;
    let Some(summary) = Summary::of(&mut times) else {
        bail!("nothing measured");
    };
    println!(
        "{{\"params\":\"m={} t={} p={}\",\"verify_ms_p50\":{:.3},\"verify_ms_mean\":{:.3},\"count\":{}}}",
        params.memory_kib,
        params.iterations,
        params.parallelism,
        summary.p50.as_secs_f64() * 1e3,
        summary.mean.as_secs_f64() * 1e3,
        summary.count
    );
    Ok(())
}

fn verify_loop(kind: &str, iterations: u64, distinct: u64) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let fixture = runtime.block_on(Fixture::new(&bench_config(|_| {})))?;
    let tokens: Vec<String> = match kind {
        "opaque" => vec![fixture.opaque.clone()],
        "jwt-cached" if distinct <= 1 => vec![fixture.jwt.clone()],
        "jwt-cached" => (0..distinct)
            .map(|n| fixture.mint_jwt(n))
            .collect::<Result<_>>()?,
        "jwt-first-seen" => (0..iterations)
            .map(|n| fixture.mint_jwt(n))
            .collect::<Result<_>>()?,
        other => bail!("unknown token kind {other:?}"),
    };
    let service = &fixture.service;
    let mut times = Vec::with_capacity(usize::try_from(iterations).unwrap_or(0));
    runtime.block_on(async {
        if kind == "jwt-cached" {
            for token in &tokens {
                service.authenticate(token).await?;
            }
        }
        for n in 0..iterations {
            let token = &tokens[(n % tokens.len() as u64) as usize];
            let start = Instant::now();
            service.authenticate(token).await?;
            times.push(start.elapsed());
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let Some(s) = Summary::of(&mut times) else {
        bail!("nothing measured");
    };
    println!(
        "{kind}: {} calls, mean {} µs, p50 {} µs, p99 {} µs",
        s.count,
        micros(s.mean),
        micros(s.p50),
        micros(s.p99)
    );
    Ok(())
}

fn print_scale(o: &scale::Outcome) {
    let series = [
        ("raw_lookup", o.raw_lookup.as_ref()),
        ("store_lookup", Some(&o.store_lookup)),
        ("opaque_verify", Some(&o.opaque_verify)),
        ("jwt_verify_cached", Some(&o.jwt_verify)),
    ];
    let fields: Vec<String> = series
        .iter()
        .filter_map(|(name, s)| s.map(|s| (name, s)))
        .map(|(name, s)| {
            format!(
                "\"{name}_us\":{{\"p50\":{},\"p99\":{},\"mean\":{}}}",
                micros(s.p50),
                micros(s.p99),
                micros(s.mean)
            )
        })
        .collect();
    println!(
        "{{\"store\":\"{}\",\"size_of\":\"{}\",\"sessions\":{},\"seed_s\":{:.1},\"db_bytes\":{},\"bytes_per_session\":{:.1},\"lookups\":{},{}}}",
        o.store.name(),
        o.size_of,
        o.sessions,
        o.seed_time.as_secs_f64(),
        o.db_bytes,
        o.bytes_per_session,
        o.opaque_verify.count,
        fields.join(",")
    );
}
