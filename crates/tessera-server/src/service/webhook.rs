//! Signed webhooks: audit events POSTed to a configured URL, so gateways and SIEMs can react to
//! revocations without polling.
//!
//! Each delivery carries `Tessera-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over
//! `"<t>.<body>"` with the configured secret. Receivers recompute it, compare in constant time
//! and refuse old timestamps (replay). Deliveries are retried with exponential backoff; the
//! queue is bounded, and events that do not fit are dropped (and counted), never blocking a
//! request.

use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::hmac;
use tessera_store::AuditEvent;
use tokio::sync::{Notify, mpsc};

/// Events waiting for delivery, at most.
const QUEUE: usize = 1024;
/// Attempts per event.
const ATTEMPTS: u32 = 5;
/// Delay before the first retry; doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Per-attempt timeout.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Where to send events and the secret that signs them.
#[derive(Clone)]
pub struct WebhookSettings {
    /// Receiver URL.
    pub url: String,
    /// HMAC-SHA256 secret.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The sending side of the webhook queue (a no-op when webhooks are not configured).
pub struct Webhooks {
    queue: Option<mpsc::Sender<AuditEvent>>,
    pending: Arc<Pending>,
}

/// Events queued or being delivered, so shutdown can wait for them.
#[derive(Default)]
struct Pending {
    count: AtomicUsize,
    idle: Notify,
}

impl Pending {
    fn done(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

impl Webhooks {
    /// No webhooks.
    pub fn disabled() -> Webhooks {
        Webhooks {
            queue: None,
            pending: Arc::default(),
        }
    }

    /// Starts the delivery task. Must be called inside a tokio runtime.
    pub fn start(settings: WebhookSettings) -> Webhooks {
        let (tx, rx) = mpsc::channel(QUEUE);
        let pending: Arc<Pending> = Arc::default();
        tokio::spawn(deliver(settings, rx, Arc::clone(&pending)));
        Webhooks {
            queue: Some(tx),
            pending,
        }
    }

    /// Resolves once every queued event has been delivered or given up on (for shutdown,
    /// which bounds the wait).
    pub fn drained(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let pending = Arc::clone(&self.pending);
        async move {
            loop {
                let idle = pending.idle.notified();
                if pending.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        }
    }

    /// Queues an event for delivery without waiting.
    pub(crate) fn publish(&self, event: &AuditEvent) {
        let Some(queue) = &self.queue else { return };
        self.pending.count.fetch_add(1, Ordering::AcqRel);
        if queue.try_send(event.clone()).is_err() {
            self.pending.done();
            tracing::warn!(kind = %event.kind, "webhook queue full: event dropped");
            metrics::counter!("tessera_webhook_dropped_total").increment(1);
        }
    }
}

/// The signature header value for `body` sent at `timestamp`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

async fn deliver(
    settings: WebhookSettings,
    mut queue: mpsc::Receiver<AuditEvent>,
    pending: Arc<Pending>,
) {
    let client = match reqwest::Client::builder().timeout(TIMEOUT).build() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "webhook client could not be built; webhooks are off");
            return;
        }
    };
    while let Some(event) = queue.recv().await {
        let body = super::audit::event_json(&event).to_string();
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let result = client
                .post(&settings.url)
                .header("content-type", "application/json")
                .header(
                    "tessera-signature",
                    signature(&settings.secret, now, body.as_bytes()),
                )
                .body(body.clone())
                .send()
                .await;
            match result {
                Ok(response) if response.status().is_success() => break,
                Ok(response) => {
                    tracing::warn!(status = %response.status(), attempt, "webhook refused")
                }
                Err(error) => tracing::warn!(%error, attempt, "webhook delivery failed"),
            }
            if attempt == ATTEMPTS {
                metrics::counter!("tessera_webhook_failed_total").increment(1);
            } else {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        pending.done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_over_timestamp_and_body() {
        // HMAC-SHA256("key", "1.{}") computed independently with Python's hmac module.
        let sig = signature(b"key", 1, b"{}");
        assert_eq!(
            sig,
            "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
    }
}
