//! Prometheus metrics: every metric name tessera exports, in this one place, and the exporter
//! behind `GET /metrics`.
//!
//! Code anywhere records through the [`metrics`] facade (`metrics::counter!(…)`), so nothing is
//! plumbed through the service: the HTTP layer records request outcomes
//! ([`crate::http`]'s observing middleware), the [`StoreMetrics`] store layer records store
//! latency and errors, the refresh path counts refresh-token replays, and the `/metrics`
//! handler refreshes the active-session gauge. [`install`] puts a Prometheus recorder in place once per process.
//!
//! # Names and labels
//!
//! | metric | type | labels |
//! |---|---|---|
//! | [`BUILD_INFO`] | gauge (always 1) | `version` |
//! | [`HTTP_REQUESTS`] | counter | `route` (the route template, or `unmatched`), `method`, `status` |
//! | [`HTTP_PANICS`] | counter | — |
//! | [`LOGINS`] | counter | `outcome`: `success` or the problem `code` (`invalid_credentials`, `rate_limited`, `store_unavailable`, `bad_request`, …) |
//! | [`VERIFY`] | counter | `outcome`: `allowed` or the problem `code` (`unauthenticated`, `invalid_token`, `token_expired`, `token_revoked`, `forbidden`, `store_unavailable`, …) |
//! | [`VERIFY_DURATION`] | histogram, seconds | `outcome` |
//! | [`THROTTLED`] | counter | `route` |
//! | [`REFRESH_REPLAYS`] | counter | — |
//! | [`SECOND_FACTOR_FAILURES`] | counter | — |
//! | [`DPOP_REFUSALS`] | counter | `reason`: `missing`, `replayed`, `wrong_key`, `not_bound`, `required`, `invalid`, `nonce`, `busy` |
//! | [`DPOP_PROOFS_REMEMBERED`] | gauge | — |
//! | [`DBSC_REFUSALS`] | counter | `step`: `registration`, `refresh` |
//! | [`ACTIVE_SESSIONS`] | gauge | — |
//! | [`STORE_DURATION`] | histogram, seconds | `operation` (the store method) |
//! | [`STORE_ERRORS`] | counter | `operation`, `kind` (`unavailable`, `conflict`, `corrupt`, `other`) |
//!
//! # Security
//!
//! Label values come from fixed sets (route templates, method names, status codes, problem
//! codes, store method names), never from the request: no username, token, session id or
//! address ever becomes a label, and the number of series stays bounded whatever clients send.

mod store;

use std::borrow::Borrow;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::Mutex;

pub use store::{MeteredStore, StoreMetrics};

/// Gauge, always 1, labelled with the running `version`.
pub const BUILD_INFO: &str = "tessera_build_info";
/// HTTP responses by `route`, `method` and `status`.
pub const HTTP_REQUESTS: &str = "tessera_http_requests_total";
/// Request handlers that panicked (each answered 500; the process carried on).
pub const HTTP_PANICS: &str = "tessera_http_panics_total";
/// `POST /v1/login` responses by `outcome`.
pub const LOGINS: &str = "tessera_logins_total";
/// `/v1/verify` responses by `outcome`.
pub const VERIFY: &str = "tessera_verify_total";
/// Time to answer `/v1/verify`, by `outcome`.
pub const VERIFY_DURATION: &str = "tessera_verify_duration_seconds";
/// Requests refused with 429 (throttling), by `route`.
pub const THROTTLED: &str = "tessera_throttled_requests_total";
/// Refresh tokens presented again after their grace window: each revoked its session.
pub const REFRESH_REPLAYS: &str = "tessera_refresh_replays_total";
/// Requests refused for their DPoP proof (RFC 9449), by `reason`.
pub const DPOP_REFUSALS: &str = "tessera_dpop_refusals_total";
/// DBSC registrations and refreshes refused for their response, by `step`.
pub const DBSC_REFUSALS: &str = "tessera_dbsc_refusals_total";
/// DPoP proofs this instance remembers in memory (its replay cache), refreshed every few
/// seconds while serving.
pub const DPOP_PROOFS_REMEMBERED: &str = "tessera_dpop_proofs_remembered";
/// Wrong, replayed or unknown one-time and recovery codes.
pub const SECOND_FACTOR_FAILURES: &str = "tessera_second_factor_failures_total";
/// Live sessions (not revoked, not expired) in the store, refreshed when `/metrics` is scraped.
pub const ACTIVE_SESSIONS: &str = "tessera_active_sessions";
/// Store operation latency, by `operation`.
pub const STORE_DURATION: &str = "tessera_store_operation_duration_seconds";
/// Failed store operations, by `operation` and `kind`.
pub const STORE_ERRORS: &str = "tessera_store_errors_total";

/// Histogram buckets (seconds): from half a millisecond (a cached verify) to the one-second
/// store timeout and a little beyond.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// How often the active-session gauge may be recomputed: it reads the store, and `/metrics`
/// needs no authentication, so scrapes must not be a way to load the store.
const ACTIVE_SESSIONS_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest a scrape waits for the active-session count before answering with the last value.
const ACTIVE_SESSIONS_TIMEOUT: Duration = Duration::from_secs(1);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls return the same handle)
/// and describes every metric.
///
/// When another recorder was installed first (an application embedding tessera with its own
/// metrics), tessera's recorder stays private: `/metrics` then shows only what was recorded
/// before, and a warning is logged.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            // Fails only for an empty bucket list, which LATENCY_BUCKETS is not; summaries
            // (the exporter's default) would still be valid output.
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
            }
            describe();
            initialise();
            handle
        })
        .clone()
}

/// Series that alerts watch are exported from the start, at zero, so an alert on them sees
/// data before the first event (a series that appears only at its first increment cannot be
/// told apart from a missing exporter).
fn initialise() {
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    metrics::counter!(HTTP_PANICS).increment(0);
    metrics::counter!(REFRESH_REPLAYS).increment(0);
    metrics::counter!(SECOND_FACTOR_FAILURES).increment(0);
    // The refusals that suggest a stolen token.
    for reason in ["missing", "replayed", "wrong_key"] {
        metrics::counter!(DPOP_REFUSALS, "reason" => reason).increment(0);
    }
    metrics::gauge!(ACTIVE_SESSIONS).set(0.0);
    metrics::gauge!(DPOP_PROOFS_REMEMBERED).set(0.0);
    metrics::counter!(LOGINS, "outcome" => "success").increment(0);
    metrics::counter!(LOGINS, "outcome" => "invalid_credentials").increment(0);
    metrics::counter!(LOGINS, "outcome" => "rate_limited").increment(0);
    metrics::counter!(VERIFY, "outcome" => "allowed").increment(0);
    // The routes that throttle password guessing.
    for route in ["/v1/login", "/v1/password"] {
        metrics::counter!(THROTTLED, "route" => route).increment(0);
    }
    metrics::counter!(STORE_ERRORS, "operation" => "ping", "kind" => "unavailable").increment(0);
}

fn describe() {
    describe_gauge!(BUILD_INFO, "tessera build information (always 1)");
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP responses by route template, method and status"
    );
    describe_counter!(
        HTTP_PANICS,
        "request handlers that panicked; each was answered with 500"
    );
    describe_counter!(
        LOGINS,
        "login responses by outcome (success or the problem code)"
    );
    describe_counter!(
        VERIFY,
        "verify responses by outcome (allowed or the problem code)"
    );
    describe_histogram!(
        VERIFY_DURATION,
        Unit::Seconds,
        "time to answer a verify request, by outcome"
    );
    describe_counter!(THROTTLED, "requests refused with 429, by route template");
    describe_counter!(
        REFRESH_REPLAYS,
        "spent refresh tokens presented after the grace window (each revoked its session)"
    );
    describe_counter!(
        SECOND_FACTOR_FAILURES,
        "one-time or recovery codes refused (wrong, replayed, or for no enrolled factor)"
    );
    describe_counter!(
        DPOP_REFUSALS,
        "requests refused for their DPoP proof or for lacking one, by reason"
    );
    describe_counter!(
        DBSC_REFUSALS,
        "DBSC registrations and refreshes refused for their signed response, by step"
    );
    describe_gauge!(
        DPOP_PROOFS_REMEMBERED,
        "DPoP proofs this instance remembers in memory to refuse replays (about 30 bytes each)"
    );
    describe_gauge!(
        ACTIVE_SESSIONS,
        "live sessions in the store (refreshed at most once a second, when scraped)"
    );
    describe_histogram!(
        STORE_DURATION,
        Unit::Seconds,
        "store operation latency, by operation"
    );
    describe_counter!(
        STORE_ERRORS,
        "failed store operations, by operation and kind"
    );
}

/// Metric handles kept per label set once tessera's recorder is installed.
///
/// Finding a series through the macros builds its key (label strings, an `Arc` of labels) and
/// looks it up in the recorder's registry on every call: ~10 allocations per request, a sixth
/// of a `/v1/verify` answer's user-space time (`docs/performance.md`). A handle stays valid
/// for the recorder's life, so it is looked up once. Label values come from fixed sets (see
/// the module documentation), so these maps stay small. Before [`install`] (unit tests, an
/// embedding application), nothing is kept: the handles would point at no recorder forever.
struct Handles<K, H> {
    /// foldhash, not SipHash: looked up on every request, and the keys come from fixed sets
    /// (route templates, methods, statuses), so there is nothing to flood.
    map: OnceLock<RwLock<HashMap<K, H, foldhash::fast::RandomState>>>,
}

impl<K: Eq + Hash, H: Clone> Handles<K, H> {
    const fn new() -> Self {
        Handles {
            map: OnceLock::new(),
        }
    }

    /// The handle for `key`, made by `make` (with the key to keep) the first time.
    fn get<Q>(&self, key: &Q, make: impl FnOnce() -> (K, H)) -> H
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        if HANDLE.get().is_none() {
            return make().1;
        }
        let map = self.map.get_or_init(RwLock::default);
        if let Some(handle) = map.read().unwrap_or_else(PoisonError::into_inner).get(key) {
            return handle.clone();
        }
        let (key, handle) = make();
        map.write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_insert(handle)
            .clone()
    }
}

/// The response counters of one route, by method and status.
type RouteCounters = Handles<(&'static str, u16), metrics::Counter>;

/// Records one HTTP response.
pub fn http_response(route: &str, method: &'static str, status: u16) {
    static REQUESTS: Handles<String, Arc<RouteCounters>> = Handles::new();
    let by_route = REQUESTS.get(route, || (route.to_owned(), Arc::new(Handles::new())));
    by_route
        .get(&(method, status), || {
            let counter = metrics::counter!(
                HTTP_REQUESTS,
                "route" => route.to_owned(),
                "method" => method,
                "status" => status.to_string(),
            );
            ((method, status), counter)
        })
        .increment(1);
    if status == 429 {
        metrics::counter!(THROTTLED, "route" => route.to_owned()).increment(1);
    }
}

/// Records a handler panic.
pub fn http_panic() {
    metrics::counter!(HTTP_PANICS).increment(1);
}

/// Records a login response; `outcome` is `success` or a problem code.
pub fn login(outcome: &'static str) {
    metrics::counter!(LOGINS, "outcome" => outcome).increment(1);
}

/// Records a verify response; `outcome` is `allowed` or a problem code.
pub fn verify(outcome: &'static str, elapsed: Duration) {
    static VERIFIES: Handles<&'static str, (metrics::Counter, metrics::Histogram)> = Handles::new();
    let (count, duration) = VERIFIES.get(outcome, || {
        let count = metrics::counter!(VERIFY, "outcome" => outcome);
        let duration = metrics::histogram!(VERIFY_DURATION, "outcome" => outcome);
        (outcome, (count, duration))
    });
    count.increment(1);
    duration.record(elapsed.as_secs_f64());
}

/// Records the latency of one store operation.
fn store_duration(operation: &'static str, elapsed: Duration) {
    static DURATIONS: Handles<&'static str, metrics::Histogram> = Handles::new();
    DURATIONS
        .get(operation, || {
            let histogram = metrics::histogram!(STORE_DURATION, "operation" => operation);
            (operation, histogram)
        })
        .record(elapsed.as_secs_f64());
}

/// Records a refresh-token replay (the store revoked the session).
pub fn refresh_replay() {
    metrics::counter!(REFRESH_REPLAYS).increment(1);
}

/// Records a request refused for its DPoP proof, or for lacking one.
pub fn dpop_refused(reason: &'static str) {
    metrics::counter!(DPOP_REFUSALS, "reason" => reason).increment(1);
}

/// Records a DBSC registration or refresh refused for its response.
pub fn dbsc_refused(step: &'static str) {
    metrics::counter!(DBSC_REFUSALS, "step" => step).increment(1);
}

/// Sets how many DPoP proofs this instance remembers.
pub fn dpop_proofs_remembered(count: usize) {
    #[allow(clippy::cast_precision_loss)] // exact below 2^53 proofs
    metrics::gauge!(DPOP_PROOFS_REMEMBERED).set(count as f64);
}

/// Records a refused one-time or recovery code.
pub fn second_factor_failure() {
    metrics::counter!(SECOND_FACTOR_FAILURES).increment(1);
}

/// The exporter behind `GET /metrics`: renders the recorder and keeps the active-session gauge
/// fresh.
pub struct Exporter {
    handle: PrometheusHandle,
    /// When the active-session gauge was last recomputed; the lock makes concurrent scrapes
    /// share one store read.
    refreshed: Mutex<Option<Instant>>,
}

impl Exporter {
    /// An exporter on the process-wide recorder ([`install`]s it if needed).
    pub fn new() -> Exporter {
        Exporter {
            handle: install(),
            refreshed: Mutex::new(None),
        }
    }

    /// Recomputes what is read at scrape time (the live-session count, from `count_live`),
    /// then renders every metric in the Prometheus text format.
    pub async fn render<F, E>(&self, count_live: impl FnOnce() -> F) -> String
    where
        F: Future<Output = Result<usize, E>>,
    {
        self.refresh_active_sessions(count_live).await;
        self.handle.render()
    }

    /// Runs the recorder's periodic maintenance (drains histogram buffers).
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Sets [`ACTIVE_SESSIONS`] from the store, at most once per second; when the store does
    /// not answer in time the last value stays (the failure shows in [`STORE_ERRORS`]).
    async fn refresh_active_sessions<F, E>(&self, count_live: impl FnOnce() -> F)
    where
        F: Future<Output = Result<usize, E>>,
    {
        let mut refreshed = self.refreshed.lock().await;
        if refreshed.is_some_and(|at| at.elapsed() < ACTIVE_SESSIONS_MIN_INTERVAL) {
            return;
        }
        if let Ok(Ok(live)) = tokio::time::timeout(ACTIVE_SESSIONS_TIMEOUT, count_live()).await {
            #[allow(clippy::cast_precision_loss)] // exact below 2^53 sessions
            metrics::gauge!(ACTIVE_SESSIONS).set(live as f64);
        }
        *refreshed = Some(Instant::now());
    }
}

impl Default for Exporter {
    fn default() -> Self {
        Exporter::new()
    }
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    #[test]
    fn every_counter_and_gauge_is_exported_before_its_first_event() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, initialise);
        let text = handle.render();
        for family in [
            BUILD_INFO,
            HTTP_PANICS,
            LOGINS,
            VERIFY,
            THROTTLED,
            REFRESH_REPLAYS,
            SECOND_FACTOR_FAILURES,
            DPOP_REFUSALS,
            DPOP_PROOFS_REMEMBERED,
            ACTIVE_SESSIONS,
            STORE_ERRORS,
        ] {
            assert!(
                text.contains(&format!("\n{family}")) || text.starts_with(family),
                "{family} missing:\n{text}"
            );
        }
        assert!(
            text.contains("tessera_throttled_requests_total{route=\"/v1/login\"} 0"),
            "{text}"
        );
    }
}
