//! Change events over PostgreSQL `LISTEN`/`NOTIFY`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use futures_util::StreamExt;
use tessera_store::events::{EventBus, LocalBus, Notice, StoreEvent};
use tessera_store::{StoreError, StoreResult};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;

use crate::OP_TIMEOUT;
use crate::error::{pg, pool};
use crate::tls::Rustls;

/// Longest pause between two attempts to re-establish the listening connection.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// An [`EventBus`] on PostgreSQL: `pg_notify` publishes, and one dedicated connection per
/// instance `LISTEN`s and fans notifications out in process.
///
/// When the listening connection breaks, it is re-established with backoff and subscribers get
/// [`Notice::Resync`] once it listens again (notifications sent meanwhile were lost). The bus
/// stops listening when the last clone is dropped.
#[derive(Clone)]
pub struct PgEventBus {
    pool: Pool,
    channel: String,
    local: LocalBus,
    _listener: Arc<Listener>,
}

impl std::fmt::Debug for PgEventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgEventBus")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

struct Listener(JoinHandle<()>);

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `channel` as a quoted SQL identifier.
fn quoted(channel: &str) -> String {
    format!("\"{}\"", channel.replace('"', "\"\""))
}

/// Channel names are identifiers: at most 63 bytes, or `LISTEN` and `pg_notify` disagree.
fn fit(channel: &str) -> String {
    let mut end = channel.len().min(63);
    while !channel.is_char_boundary(end) {
        end -= 1;
    }
    channel.get(..end).unwrap_or("tessera_events").to_owned()
}

impl PgEventBus {
    pub(crate) fn start(
        pool: Pool,
        config: tokio_postgres::Config,
        tls: Rustls,
        channel: String,
    ) -> PgEventBus {
        let channel = fit(&channel);
        let local = LocalBus::new();
        let task = tokio::spawn(listen(config, tls, channel.clone(), local.clone()));
        PgEventBus {
            pool,
            channel,
            local,
            _listener: Arc::new(Listener(task)),
        }
    }
}

/// Keeps one connection listening, forever: connect, `LISTEN`, announce a resync, forward
/// notifications until the connection ends, wait, start over.
async fn listen(config: tokio_postgres::Config, tls: Rustls, channel: String, local: LocalBus) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match tokio::time::timeout(OP_TIMEOUT, config.connect(tls.clone())).await {
            Ok(Ok((client, mut connection))) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                // The connection must be polled for the LISTEN below to complete, and for
                // notifications to arrive: a task of its own drives it.
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                let _ = tx.send(n.payload().to_owned());
                            }
                            Ok(_) => {}
                            Err(error) => {
                                tracing::warn!(%error, "event listener connection failed");
                                break;
                            }
                        }
                    }
                });
                let listening = tokio::time::timeout(
                    OP_TIMEOUT,
                    client.batch_execute(&format!("LISTEN {}", quoted(&channel))),
                )
                .await;
                if matches!(listening, Ok(Ok(()))) {
                    backoff = Duration::from_millis(100);
                    // Whatever was published while nobody listened is lost: resync.
                    local.deliver(Notice::Resync);
                    while let Some(payload) = rx.recv().await {
                        match StoreEvent::decode(&payload) {
                            Some(event) => local.deliver(Notice::Event(event)),
                            None => tracing::debug!(%payload, "ignoring an unknown event"),
                        }
                    }
                    tracing::warn!("event listener disconnected; reconnecting");
                } else {
                    tracing::warn!("could not LISTEN for store events; retrying");
                }
                driver.abort();
                drop(client);
            }
            Ok(Err(error)) => tracing::warn!(%error, "event listener cannot connect; retrying"),
            Err(_) => tracing::warn!("event listener connection timed out; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[async_trait]
impl EventBus for PgEventBus {
    async fn publish(&self, event: &StoreEvent) -> StoreResult<()> {
        let payload = event.encode();
        let work = async {
            let client = self.pool.get().await.map_err(pool)?;
            client
                .execute("SELECT pg_notify($1, $2)", &[&self.channel, &payload])
                .await
                .map_err(pg)?;
            Ok::<(), crate::error::Failure>(())
        };
        match tokio::time::timeout(OP_TIMEOUT, work).await {
            Ok(result) => result.map_err(StoreError::from),
            Err(elapsed) => Err(StoreError::Unavailable(Box::new(elapsed))),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.local.subscribe()
    }
}
