//! Running the server: listener, TLS or plain HTTP, connection timeouts, background upkeep,
//! and the graceful shutdown sequence.
//!
//! Connections are served by hyper (HTTP/1.1 and HTTP/2, over rustls or plain TCP) in
//! [`crate::connection`], which also holds each connection's watchdog.
//!
//! # Timeouts (against slowloris and idle hoarding)
//!
//! - `header_read_timeout`: the request head must arrive within it, however slowly it trickles:
//!   from the opening of a connection (HTTP/2 included) and, on HTTP/1.1, from each response,
//!   so an idle HTTP/1.1 keep-alive connection closes after it.
//! - `keep_alive_timeout`: a connection on which a read or a write has waited this long is
//!   closed, HTTP/2 included (hyper has no idle timeout for HTTP/2).
//! - `body_read_timeout`: enforced where bodies are read (408 `request_timeout`).
//! - TLS handshakes: [`connection::TLS_HANDSHAKE_TIMEOUT`].
//!
//! # Shutdown
//!
//! When `shutdown` resolves: the listener closes (new connections are refused), idle
//! connections close, in-flight requests finish (at most [`DRAIN_TIMEOUT`], then the rest are
//! cut), then the service's [`crate::shutdown::FlushHooks`] run (at most [`FLUSH_TIMEOUT`]),
//! and [`run`] returns.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::connection;
use crate::http::{self, HttpSettings};
use crate::metrics::Exporter;
use crate::service::Tessera;
use crate::tls::{self, TlsError};

/// Longest time in-flight requests get to finish after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time the flush hooks get after the drain.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the server could not run.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Plain HTTP was asked for on a non-loopback address without `--behind-proxy`.
    #[error(
        "refusing to serve plain HTTP on {0}: tokens would cross the network unencrypted. \
         Use --tls-cert/--tls-key or --tls-self-signed, listen on a loopback address, \
         or pass --behind-proxy when a TLS-terminating proxy is in front"
    )]
    PlainHttpOnNetwork(SocketAddr),
    /// The listen address is not valid.
    #[error("invalid listen address {0:?}")]
    BadAddress(String),
    /// TLS could not be configured.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Binding or serving failed.
    #[error("cannot serve on {addr}")]
    Io {
        /// The address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Checks that the listen address and TLS settings are an allowed combination.
pub fn check_transport(config: &Config) -> Result<SocketAddr, ServeError> {
    let addr: SocketAddr = config
        .listen
        .parse()
        .map_err(|_| ServeError::BadAddress(config.listen.clone()))?;
    if !config.serves_tls() && !addr.ip().is_loopback() && !config.behind_proxy {
        return Err(ServeError::PlainHttpOnNetwork(addr));
    }
    Ok(addr)
}

/// Serves the API until `shutdown` resolves, then drains and flushes (see the module docs).
/// `on_bound` is told the bound address (useful with port 0).
pub async fn run(
    config: &Config,
    service: Arc<Tessera>,
    on_bound: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let listener = Listener::bind(config)?;
    on_bound(listener.local_addr());
    run_on(config, listener, service, shutdown).await
}

/// [`run`] on a listener bound before (so a start that cannot bind fails before anything else).
pub async fn run_on(
    config: &Config,
    listener: Listener,
    service: Arc<Tessera>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let exporter = Arc::new(Exporter::new());
    let app = http::served_with(
        Arc::clone(&service),
        HttpSettings::from_config(config),
        Arc::clone(&exporter),
    );
    let background = tokio::spawn(upkeep(Arc::clone(&service), exporter));
    let result = serve_router_on(config, listener, app, shutdown).await;
    background.abort();
    let hooks = service.flush_hooks();
    if !hooks.is_empty() {
        tracing::info!(hooks = hooks.len(), "flushing before exit");
        hooks.flush(FLUSH_TIMEOUT).await;
    }
    result
}

/// A bound listening socket with the transport it will serve: what [`Listener::bind`] checked
/// and loaded (the address rule, the TLS certificate) cannot fail later.
pub struct Listener {
    socket: std::net::TcpListener,
    addr: SocketAddr,
    rustls: Option<Arc<rustls::ServerConfig>>,
}

impl Listener {
    /// Checks the transport rule, loads the TLS certificate (if any) and binds the address.
    pub fn bind(config: &Config) -> Result<Listener, ServeError> {
        let wanted = check_transport(config)?;
        let io_error = |source| ServeError::Io {
            addr: wanted.to_string(),
            source,
        };
        let rustls = if config.serves_tls() {
            Some(match (&config.tls_cert, &config.tls_key) {
                (Some(cert), Some(key)) => tls::from_pem_files(cert, key)?,
                _ => tls::self_signed()?,
            })
        } else {
            None
        };
        let socket = std::net::TcpListener::bind(wanted).map_err(io_error)?;
        socket.set_nonblocking(true).map_err(io_error)?;
        let addr = socket.local_addr().map_err(io_error)?;
        Ok(Listener {
            socket,
            addr,
            rustls,
        })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Serves any router with tessera's transport (TLS or plain, per `config`), timeouts and
/// graceful shutdown: the runner behind [`run`], usable with a router of one's own (tests use
/// it to check that the protective layers of [`http::protect`] hold under the real server).
pub async fn serve_router(
    config: &Config,
    app: Router,
    on_bound: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let listener = Listener::bind(config)?;
    on_bound(listener.local_addr());
    serve_router_on(config, listener, app, shutdown).await
}

async fn serve_router_on(
    config: &Config,
    listener: Listener,
    app: impl connection::Answers<hyper::body::Incoming>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let Listener {
        socket,
        addr,
        rustls,
    } = listener;
    let listener = TcpListener::from_std(socket).map_err(|source| ServeError::Io {
        addr: addr.to_string(),
        source,
    })?;
    let limits = connection::Limits {
        idle: config.keep_alive_timeout,
        head: config.header_read_timeout,
    };
    let listening = Arc::new(connection::Listening::new(app, rustls, limits));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) => {
                connections.spawn(connection::serve(
                    stream,
                    peer,
                    Arc::clone(&listening),
                    stopping.clone(),
                ));
            }
            Err(error) => refused_accept(error).await,
        }
    }
    // Closing the listener refuses new connections at once.
    drop(listener);
    tracing::info!(
        in_flight_connections = connections.len(),
        "shutting down: no new connections; draining in-flight requests"
    );
    let _ = stop.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            cut = connections.len(),
            "requests still in flight at the drain timeout: their connections are cut"
        );
        connections.shutdown().await;
    }
    tracing::info!("all connections closed");
    Ok(())
}

/// After a failed `accept`: a connection that failed before it was taken is nothing to act
/// on; anything else (out of file descriptors, say) is logged and waited out briefly instead
/// of spinning.
async fn refused_accept(error: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(%error, "accepting a connection failed; retrying shortly");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Periodic upkeep while serving: metrics maintenance every few seconds, and once an hour the
/// deletion of sessions past their absolute expiry, so the store does not grow for ever.
async fn upkeep(service: Arc<Tessera>, exporter: Arc<Exporter>) {
    const METRICS_EVERY: Duration = Duration::from_secs(5);
    const PURGE_EVERY: u32 = 720; // × 5 s = one hour
    // The log is read whole by a verifier that starts: keep it to what still matters.
    const PURGE_LOG_EVERY: u32 = 12; // × 5 s = one minute
    let mut tick = tokio::time::interval(METRICS_EVERY);
    let mut ticks: u32 = 0;
    loop {
        tick.tick().await;
        exporter.upkeep();
        crate::metrics::dpop_proofs_remembered(service.dpop_proofs_remembered());
        if ticks.is_multiple_of(PURGE_EVERY)
            && let Err(error) = service.store().purge_sessions(service.now()).await
        {
            tracing::warn!(%error, "purging expired sessions failed");
        }
        if ticks.is_multiple_of(PURGE_LOG_EVERY)
            && let Err(error) = service.purge_revocation_log().await
        {
            tracing::warn!(%error, "purging the revocation log failed");
        }
        ticks = ticks.wrapping_add(1);
    }
}
