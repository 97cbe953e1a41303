//! Running the server: listener, TLS or plain HTTP, background upkeep, shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::http::{self, HttpSettings};
use crate::service::Tessera;
use crate::tls::{self, TlsError};

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
    #[error("cannot serve on {addr}: {source}")]
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

/// Serves the API until `shutdown` resolves. `on_bound` is told the bound address (useful
/// with port 0).
pub async fn run(
    config: &Config,
    service: Arc<Tessera>,
    on_bound: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = check_transport(config)?;
    let app = http::router(Arc::clone(&service), HttpSettings::from_config(config))
        .into_make_service_with_connect_info::<SocketAddr>();
    let purger = tokio::spawn(purge_expired(Arc::clone(&service)));
    let key_sync = tokio::spawn(sync_keys(Arc::clone(&service)));
    let io_error = |source| ServeError::Io {
        addr: addr.to_string(),
        source,
    };
    let result = if config.serves_tls() {
        let rustls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => tls::from_pem_files(cert, key)?,
            _ => tls::self_signed()?,
        };
        let listener = std::net::TcpListener::bind(addr).map_err(io_error)?;
        listener.set_nonblocking(true).map_err(io_error)?;
        on_bound(listener.local_addr().map_err(io_error)?);
        let handle = axum_server::Handle::new();
        let stopper = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            stopper.graceful_shutdown(Some(Duration::from_secs(10)));
        });
        axum_server::from_tcp_rustls(
            listener,
            axum_server::tls_rustls::RustlsConfig::from_config(rustls),
        )
        .map_err(io_error)?
        .handle(handle)
        .serve(app)
        .await
        .map_err(io_error)
    } else {
        let listener = TcpListener::bind(addr).await.map_err(io_error)?;
        on_bound(listener.local_addr().map_err(io_error)?);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(io_error)
    };
    purger.abort();
    key_sync.abort();
    result
}

/// How often an instance re-reads the signing keys, to pick up a rotation made by another
/// instance or by `tessera key rotate` (minting and unknown `kid`s also trigger a read).
pub const KEY_SYNC_INTERVAL: Duration = Duration::from_secs(5);

/// Re-reads the signing keys every [`KEY_SYNC_INTERVAL`], so the JWKS and the verifiers
/// follow rotations made elsewhere.
async fn sync_keys(service: Arc<Tessera>) {
    let mut tick = tokio::time::interval(KEY_SYNC_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match service.sync_keys().await {
            Ok(true) => tracing::info!("signing keys changed in the store; reloaded"),
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "re-reading signing keys failed"),
        }
    }
}

/// Deletes sessions past their absolute expiry once an hour, so the store does not grow forever.
async fn purge_expired(service: Arc<Tessera>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        if let Err(error) = service.store().purge_sessions(service.now()).await {
            tracing::warn!(%error, "purging expired sessions failed");
        }
    }
}
