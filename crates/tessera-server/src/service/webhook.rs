//! Signed webhooks: audit events POSTed to a configured URL, so gateways and SIEMs can react to
//! revocations without polling.
//!
//! Each delivery carries `Tessera-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over
//! `"<t>.<body>"` with the configured secret. Receivers recompute it, compare in constant time
//! and refuse old timestamps (replay). Deliveries are retried with exponential backoff; the
//! queue is bounded, and events that do not fit are dropped (and counted), never blocking a
//! request.
//!
//! # Where deliveries may go
//!
//! A webhook is a request tessera makes on an operator's say-so, carrying signed audit events,
//! so it must not be steerable to internal services (SSRF). [`check_destination`] is the one
//! rule: `https`, or plain `http` only to loopback; never to unspecified, multicast or
//! broadcast addresses; private (RFC 1918, `fc00::/7`, CGNAT `100.64.0.0/10`) and link-local
//! (`169.254.0.0/16`, `fe80::/10`) addresses only when `webhook_allow_private` says so. It is
//! applied to an IP-literal host when the configuration is validated, and to every address a
//! host name resolves to when connecting ([`FilteringResolver`]), so a name that resolves to a
//! private address is refused too. Redirects are never followed (a 3xx is a failed delivery)
//! and no proxy from the environment is used, so the connection goes where was checked.

use std::net::{IpAddr, SocketAddr};
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
    /// Whether private and link-local destinations are allowed (`webhook_allow_private`).
    pub allow_private: bool,
}

/// Which addresses a webhook may connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Destinations {
    /// Plain `http`: loopback only, as nothing else protects the signed events in transit.
    loopback_only: bool,
    /// `webhook_allow_private`.
    allow_private: bool,
}

impl Destinations {
    /// Whether a connection to `ip` is allowed.
    fn permit(self, ip: IpAddr) -> bool {
        // An IPv4-mapped IPv6 address reaches the IPv4 host: judge that one.
        let ip = ip.to_canonical();
        if ip.is_loopback() {
            return true;
        }
        if self.loopback_only || ip.is_unspecified() || ip.is_multicast() {
            return false;
        }
        let (private, link_local) = match ip {
            IpAddr::V4(v4) => {
                if v4.is_broadcast() {
                    return false;
                }
                let [a, b, ..] = v4.octets();
                // CGNAT 100.64.0.0/10 is as internal as RFC 1918.
                let cgnat = a == 100 && (b & 0xc0) == 64;
                (v4.is_private() || cgnat, v4.is_link_local())
            }
            IpAddr::V6(v6) => {
                let first = v6.segments()[0];
                // fc00::/7 (unique local) and fe80::/10 (link-local).
                ((first & 0xfe00) == 0xfc00, (first & 0xffc0) == 0xfe80)
            }
        };
        !(private || link_local) || self.allow_private
    }

    /// The addresses of `addrs` that may be connected to; an error when none may.
    fn filter(
        self,
        host: &str,
        addrs: impl Iterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, String> {
        let mut refused = Vec::new();
        let allowed: Vec<SocketAddr> = addrs
            .filter(|addr| {
                let ok = self.permit(addr.ip());
                if !ok {
                    refused.push(addr.ip());
                }
                ok
            })
            .collect();
        if allowed.is_empty() {
            return Err(format!(
                "webhook host {host} resolves to no allowed address (refused: {refused:?}; see \
                 webhook_allow_private)"
            ));
        }
        Ok(allowed)
    }
}

/// Checks a webhook URL against the destination rule (module documentation): the scheme, and
/// the host when it is an IP literal (names are checked at connect time by the resolver).
///
/// # Errors
/// A sentence saying what is wrong, for the configuration error.
pub fn check_destination(url: &str, allow_private: bool) -> Result<(), String> {
    destinations(url, allow_private).map(|_| ())
}

fn destinations(url: &str, allow_private: bool) -> Result<Destinations, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("webhook_url is not a URL: {e}"))?;
    let ip = match parsed.host() {
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        Some(url::Host::Domain(_)) => None,
        None => return Err("webhook_url needs a host".to_owned()),
    };
    let loopback = ip.is_some_and(|ip| ip.to_canonical().is_loopback())
        || parsed.host_str() == Some("localhost");
    let destinations = match parsed.scheme() {
        "https" => Destinations {
            loopback_only: false,
            allow_private,
        },
        "http" if loopback => Destinations {
            loopback_only: true,
            allow_private,
        },
        "http" => {
            return Err("webhook_url must be https (plain http only to loopback)".to_owned());
        }
        _ => return Err("webhook_url must be an https URL".to_owned()),
    };
    if let Some(ip) = ip
        && !destinations.permit(ip)
    {
        return Err(format!(
            "webhook_url's address {ip} is private, link-local or otherwise not allowed (set \
             webhook_allow_private to allow private and link-local destinations)"
        ));
    }
    Ok(destinations)
}

/// A DNS resolver that hands the HTTP client only the addresses [`Destinations`] allows, so a
/// name resolving to an internal address is refused at connect time, not just at startup.
struct FilteringResolver(Destinations);

impl reqwest::dns::Resolve for FilteringResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let destinations = self.0;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed = destinations.filter(&host, found)?;
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
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
    // Checked again here (not only in config validation): the settings may come from a library
    // user, and the resolver below never sees an IP-literal host.
    let client = destinations(&settings.url, settings.allow_private).and_then(|destinations| {
        reqwest::Client::builder()
            .timeout(TIMEOUT)
            // A redirect would send the signed events to an unchecked address (issue 11 #8).
            .redirect(reqwest::redirect::Policy::none())
            // An HTTP(S)_PROXY from the environment would resolve and connect past the filter.
            .no_proxy()
            .dns_resolver(Arc::new(FilteringResolver(destinations)))
            .build()
            .map_err(|e| format!("the webhook client could not be built: {e}"))
    });
    let client = match client {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "webhooks are off");
            // Nothing will be delivered: release whatever is queued so shutdown does not wait.
            while queue.recv().await.is_some() {
                metrics::counter!("tessera_webhook_failed_total").increment(1);
                pending.done();
            }
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
            let redirected = match result {
                Ok(response) if response.status().is_success() => break,
                Ok(response) if response.status().is_redirection() => {
                    tracing::warn!(
                        status = %response.status(),
                        "webhook receiver answered a redirect, which is never followed: \
                         delivery failed"
                    );
                    true
                }
                Ok(response) => {
                    tracing::warn!(status = %response.status(), attempt, "webhook refused");
                    false
                }
                Err(error) => {
                    tracing::warn!(%error, attempt, "webhook delivery failed");
                    false
                }
            };
            // A redirect is the receiver's configuration, not a passing fault: no retry.
            if redirected || attempt == ATTEMPTS {
                metrics::counter!("tessera_webhook_failed_total").increment(1);
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        pending.done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn private_and_link_local_addresses_only_when_allowed() {
        let strict = Destinations {
            loopback_only: false,
            allow_private: false,
        };
        let lenient = Destinations {
            allow_private: true,
            ..strict
        };
        let internal = [
            "10.0.0.1",
            "172.16.5.4",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.169.254",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
        ];
        for text in internal {
            assert!(!strict.permit(ip(text)), "{text} refused by default");
            assert!(lenient.permit(ip(text)), "{text} allowed when told");
        }
        for text in ["0.0.0.0", "::", "255.255.255.255", "224.0.0.1", "ff02::1"] {
            assert!(!strict.permit(ip(text)), "{text} never");
            assert!(!lenient.permit(ip(text)), "{text} never, even when told");
        }
        let public = [
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "2001:db8::1",
            "fec0::1",
        ];
        for text in public.into_iter().chain(["127.0.0.1", "127.9.9.9", "::1"]) {
            assert!(strict.permit(ip(text)), "{text} allowed");
        }
    }

    #[test]
    fn plain_http_goes_to_loopback_only() {
        let http = destinations("http://127.0.0.1:9/hook", false).unwrap();
        assert!(http.loopback_only);
        assert!(http.permit(ip("127.0.0.1")) && http.permit(ip("::1")));
        for text in ["8.8.8.8", "10.0.0.1", "2001:db8::1"] {
            assert!(!http.permit(ip(text)), "{text} over http");
        }
        assert!(
            destinations("http://localhost:9/", false)
                .unwrap()
                .loopback_only
        );
        assert!(destinations("http://[::1]:9/", false).is_ok());
        assert!(
            !destinations("https://hooks.example/", false)
                .unwrap()
                .loopback_only
        );
    }

    #[test]
    fn destinations_are_checked_when_configured() {
        for (url, allow_private) in [
            ("http://hooks.example/h", false),
            ("http://10.0.0.1/h", true),
            ("ftp://hooks.example/h", false),
            ("file:///etc/passwd", false),
            ("https://10.0.0.1/h", false),
            ("https://[fe80::1]/h", false),
            ("https://169.254.169.254/latest", false),
            ("https://100.64.1.1/h", false),
            ("https://[::ffff:192.168.0.1]/h", false),
            ("https://0.0.0.0/h", true),
            ("https://[ff02::1]/h", true),
            ("not a url", false),
        ] {
            assert!(
                check_destination(url, allow_private).is_err(),
                "{url} refused (allow_private {allow_private})"
            );
        }
        for (url, allow_private) in [
            ("https://hooks.example/h", false),
            ("https://203.0.113.9:8443/h", false),
            ("http://127.0.0.1:8080/h", false),
            ("https://10.0.0.1/h", true),
            ("https://[fe80::1]/h", true),
        ] {
            assert!(
                check_destination(url, allow_private).is_ok(),
                "{url} allowed (allow_private {allow_private})"
            );
        }
    }

    #[test]
    fn the_resolver_keeps_only_allowed_addresses() {
        let strict = Destinations {
            loopback_only: false,
            allow_private: false,
        };
        let addr = |text: &str| SocketAddr::new(ip(text), 443);
        // A name that resolves only to internal addresses is refused; nothing is connected to.
        let only_internal = [addr("10.0.0.7"), addr("fe80::7")];
        assert!(
            strict
                .filter("rebind.example", only_internal.into_iter())
                .is_err()
        );
        // Mixed answers: only the allowed ones are handed to the client.
        let mixed = [
            addr("192.168.0.9"),
            addr("203.0.113.9"),
            addr("169.254.0.1"),
        ];
        assert_eq!(
            strict.filter("mixed.example", mixed.into_iter()).unwrap(),
            vec![addr("203.0.113.9")]
        );
        let http = Destinations {
            loopback_only: true,
            allow_private: true,
        };
        assert!(http.filter("h", [addr("203.0.113.9")].into_iter()).is_err());
    }

    #[tokio::test]
    async fn the_resolver_answers_loopback_names_with_loopback_addresses() {
        use reqwest::dns::Resolve;
        let name = |text: &str| text.parse::<reqwest::dns::Name>().unwrap();
        let http = FilteringResolver(Destinations {
            loopback_only: true,
            allow_private: false,
        });
        let addrs: Vec<SocketAddr> = http.resolve(name("localhost")).await.unwrap().collect();
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()));
    }

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
