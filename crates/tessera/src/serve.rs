//! `tessera serve`: logging, signals, the first admin, and the server itself.

use std::future::Future;
use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use tessera_server::config::{Config, LogFormat};
use tessera_server::master_key::{self, MasterKeySource};
use tessera_server::serve::Listener;
use tessera_server::{Builder, Server, builder};

use crate::args::ServeArgs;

/// Runs the server until SIGTERM or SIGINT.
pub async fn run(mut config: Config, config_file: Option<PathBuf>, args: &ServeArgs) -> Result<()> {
    apply_flags(&mut config, args);
    config.validate()?;
    init_logging(config.log_format);
    // Handlers are installed now, before anything is bound: a SIGTERM sent as soon as the
    // server is up must start a graceful shutdown, not kill the process.
    let shutdown = shutdown_signal()?;
    // Bound first: a start that cannot listen (port taken, bad certificate, plain HTTP off
    // loopback) fails before it creates a store, a key or a first user.
    let listener = Listener::bind(&config)?;
    let server = build(Builder::new(config.clone())).await?;
    ensure_admin(&server).await?;
    let scheme = if config.serves_tls() { "https" } else { "http" };
    tracing::info!(
        version = %env!("CARGO_PKG_VERSION"),
        store = %builder::describe(&config),
        algorithm = %config.jwt_algorithm,
        config = %config_file.as_deref().map_or("(none)".into(), |p| p.display().to_string()),
        "tessera listening on {scheme}://{}",
        listener.local_addr()
    );
    server.serve_on(listener, shutdown).await?;
    tracing::info!("tessera stopped");
    Ok(())
}

fn apply_flags(config: &mut Config, args: &ServeArgs) {
    if let Some(listen) = &args.listen {
        config.listen = listen.clone();
    }
    if args.tls_cert.is_some() {
        config.tls_cert = args.tls_cert.clone();
        config.tls_key = args.tls_key.clone();
        config.tls_self_signed = false;
    }
    if args.tls_self_signed {
        config.tls_self_signed = true;
        config.tls_cert = None;
        config.tls_key = None;
    }
    if args.behind_proxy {
        config.behind_proxy = true;
    }
}

/// Logs to stderr, as text or JSON lines, filtered by `RUST_LOG` (default `info`).
///
/// # Security
/// tessera's own events never carry a password, a token or a cookie. Panics are routed through
/// the same subscriber (so JSON stays JSON) with their message and location only.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(ToString::to_string);
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned());
        tracing::error!(?location, ?message, "panic");
    }));
}

/// Assembles the server, telling the operator about a newly generated master key.
pub async fn build(builder: Builder) -> Result<Server> {
    let server = builder.build().await?;
    if let MasterKeySource::Generated(path) = server.master_key_source() {
        notice(&format!(
            "generated a master key for the signing keys in {}; without it they cannot be \
             decrypted. To keep it away from the data, move it and set master_key_file, or use {}",
            path.display(),
            master_key::ENV_VAR
        ));
    }
    Ok(server)
}

/// Something the operator must see once: a log event when logging is set up (so JSON logs
/// stay JSON on every line), else a line on stderr.
fn notice(text: &str) {
    if tracing::dispatcher::has_been_set() {
        tracing::warn!("{text}");
    } else {
        eprintln!("tessera: {text}");
    }
}

/// On first start (no user at all) creates `admin`, with `TESSERA_ADMIN_PASSWORD` or a random
/// password printed once on stderr.
async fn ensure_admin(server: &Server) -> Result<()> {
    let given = std::env::var("TESSERA_ADMIN_PASSWORD").ok();
    let Some(admin) = server.create_first_admin(given).await? else {
        return Ok(());
    };
    match admin.generated_password {
        Some(password) => {
            notice(&format!("created user \"admin\" with password: {password}"));
            notice("this password is shown once; change it with `tessera user passwd admin`");
        }
        None => notice("created user \"admin\" with the password from TESSERA_ADMIN_PASSWORD"),
    }
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is
/// called, not when the future is first polled.
#[cfg(unix)]
fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut interrupt =
        signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    Ok(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutdown requested");
    })
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested");
    })
}
