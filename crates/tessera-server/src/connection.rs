//! One accepted connection, from its TLS handshake to its close: HTTP/1.1 or HTTP/2 served by
//! hyper, the peer's address given to every request, and a watchdog that closes connections
//! left silent ([`crate::serve`] describes the timeouts).
//!
//! The watchdog is one timer per connection, re-armed only when it fires. Wrapping the socket
//! in a stream with read and write timeouts, as before, reset a timer on every read and every
//! write: about 1 k instructions of a ~25 k-instruction request (`docs/performance.md`). Here a
//! read or write that cannot complete notes when it began, in an atomic, and the watchdog reads
//! those notes when its timer fires.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

/// Longest time a TLS handshake may take.
pub(crate) const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the connections of one listener share: the service `S` answers every request.
pub(crate) struct Listening<S> {
    app: S,
    tls: Option<TlsAcceptor>,
    http: auto::Builder<TokioExecutor>,
    limits: Limits,
}

/// When the watchdog closes a connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// A read or a write pending for this long closes the connection.
    pub(crate) idle: Duration,
    /// A connection that has not sent a whole request head this long after it opened closes
    /// (HTTP/2 included; hyper applies the same limit to each HTTP/1.1 head).
    pub(crate) first_request: Duration,
}

impl<S> Listening<S> {
    /// Serves `app` on each connection, over TLS when `tls` is given.
    pub(crate) fn new(app: S, tls: Option<Arc<rustls::ServerConfig>>, limits: Limits) -> Self {
        let mut http = auto::Builder::new(TokioExecutor::new());
        // The whole head must arrive within the limit, however slowly it trickles: a slowloris
        // client cannot hold a connection by sending a byte now and then.
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.first_request);
        http.http2().timer(TokioTimer::new());
        Listening {
            app,
            tls: tls.map(TlsAcceptor::from),
            http,
            limits,
        }
    }
}

/// Serves one accepted connection until it closes, the watchdog closes it, or `stop` turns
/// true (then in-flight requests finish and the connection closes; HTTP/2 sends `GOAWAY`).
pub(crate) async fn serve<S: Answers<Incoming>>(
    stream: TcpStream,
    peer: SocketAddr,
    listening: Arc<Listening<S>>,
    stop: watch::Receiver<bool>,
) {
    // Small request/response pairs: do not wait to coalesce writes.
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let stream = Watched {
        inner: stream,
        activity: Arc::clone(&activity),
    };
    let stopped = stopped(stop);
    tokio::pin!(stopped);
    match &listening.tls {
        None => http(stream, peer, &listening, activity, stopped).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let stream = tokio::select! {
                biased;
                () = &mut stopped => return,
                done = handshake => match done {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(_)) | Err(_) => return,
                },
            };
            http(stream, peer, &listening, activity, stopped).await;
        }
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn http<I, S: Answers<Incoming>>(
    io: I,
    peer: SocketAddr,
    listening: &Listening<S>,
    activity: Arc<Activity>,
    mut stopped: Pin<&mut impl Future<Output = ()>>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let watchdog = Arc::clone(&activity).watchdog(listening.limits);
    tokio::pin!(watchdog);
    let service = TowerToHyperService::new(Connected {
        app: listening.app.clone(),
        peer,
        activity,
    });
    let connection = listening.http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        tokio::select! {
            biased;
            _ = connection.as_mut() => return,
            // Dropping the connection closes it.
            () = &mut watchdog => return,
            () = &mut stopped, if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A service answering every request with bodies `B`, cloned per request: what a listener
/// serves (`B` = hyper's [`Incoming`]), and what the protective layer wraps (axum's body).
pub(crate) trait Answers<B>:
    Service<Request<B>, Response = Response, Error = Infallible, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<B, S> Answers<B> for S where
    S: Service<Request<B>, Response = Response, Error = Infallible, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// The service with the peer's address added to each request (axum's `ConnectInfo`).
#[derive(Clone)]
struct Connected<S> {
    app: S,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

impl<S: Answers<Incoming>> Service<Request<Incoming>> for Connected<S> {
    type Response = Response;
    type Error = Infallible;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.app.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Incoming>) -> Self::Future {
        self.activity.request_seen();
        request.extensions_mut().insert(ConnectInfo(self.peer));
        self.app.call(request)
    }
}

/// What the watchdog of one connection reads: whether a request came, and since when a read
/// or a write has been waiting (microseconds after `opened`, plus one; 0 when none waits).
struct Activity {
    opened: Instant,
    request_seen: AtomicBool,
    read_waiting_since: AtomicU64,
    write_waiting_since: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            request_seen: AtomicBool::new(false),
            read_waiting_since: AtomicU64::new(0),
            write_waiting_since: AtomicU64::new(0),
        }
    }

    fn request_seen(&self) {
        if !self.request_seen.load(Ordering::Relaxed) {
            self.request_seen.store(true, Ordering::Relaxed);
        }
    }

    /// Notes the outcome of a read or write poll: when it began waiting, or that it did not.
    fn note<T>(&self, waiting_since: &AtomicU64, poll: &Poll<T>) {
        self.note_at(waiting_since, poll, Instant::now);
    }

    /// [`Activity::note`] with the clock given (read only when a wait begins).
    fn note_at<T>(&self, waiting_since: &AtomicU64, poll: &Poll<T>, now: impl Fn() -> Instant) {
        let noted = waiting_since.load(Ordering::Relaxed);
        match poll {
            Poll::Pending if noted == 0 => {
                let since = now().saturating_duration_since(self.opened);
                let since = u64::try_from(since.as_micros()).unwrap_or(u64::MAX);
                waiting_since.store(since.saturating_add(1), Ordering::Relaxed);
            }
            Poll::Ready(_) if noted != 0 => waiting_since.store(0, Ordering::Relaxed),
            _ => {}
        }
    }

    /// Resolves when the connection must close (see [`Limits`]).
    async fn watchdog(self: Arc<Self>, limits: Limits) {
        let mut deadline = self.opened + limits.first_request.min(limits.idle);
        loop {
            tokio::time::sleep_until(deadline).await;
            match self.next_deadline(Instant::now(), limits) {
                Some(next) => deadline = next,
                None => return,
            }
        }
    }

    /// When to look again, or `None` when a limit is passed.
    fn next_deadline(&self, now: Instant, limits: Limits) -> Option<Instant> {
        let mut next = now + limits.idle;
        if !self.request_seen.load(Ordering::Relaxed) {
            next = next.min(self.opened + limits.first_request);
        }
        for waiting_since in [&self.read_waiting_since, &self.write_waiting_since] {
            let since = waiting_since.load(Ordering::Relaxed);
            if since != 0 {
                let began = self.opened + Duration::from_micros(since - 1);
                next = next.min(began + limits.idle);
            }
        }
        (next > now).then_some(next)
    }
}

/// The socket, noting in [`Activity`] when its reads and writes wait.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.activity.note(&this.activity.read_waiting_since, &poll);
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.activity
            .note(&this.activity.write_waiting_since, &poll);
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.activity
            .note(&this.activity.write_waiting_since, &poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.activity
            .note(&this.activity.write_waiting_since, &poll);
        poll
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        idle: Duration::from_secs(60),
        first_request: Duration::from_secs(10),
    };
    const PENDING: Poll<()> = Poll::Pending;

    #[test]
    fn a_connection_without_a_request_closes_at_the_first_request_limit() {
        let activity = Activity::new();
        let opened = activity.opened;
        assert_eq!(
            activity.next_deadline(opened + Duration::from_secs(1), LIMITS),
            Some(opened + LIMITS.first_request)
        );
        assert_eq!(
            activity.next_deadline(opened + LIMITS.first_request, LIMITS),
            None
        );
        activity.request_seen();
        let later = opened + LIMITS.first_request;
        assert_eq!(
            activity.next_deadline(later, LIMITS),
            Some(later + LIMITS.idle)
        );
    }

    #[test]
    fn a_read_or_write_waiting_past_the_idle_limit_closes_and_progress_clears_it() {
        let activity = Activity::new();
        activity.request_seen();
        let opened = activity.opened;
        let at = |seconds| move || opened + Duration::from_secs(seconds);
        activity.note_at(&activity.write_waiting_since, &PENDING, at(5));
        // Still waiting 30 s later: the first note stands.
        activity.note_at(&activity.write_waiting_since, &PENDING, at(35));
        let deadline = opened + Duration::from_secs(5) + LIMITS.idle;
        assert_eq!(activity.next_deadline(at(35)(), LIMITS), Some(deadline));
        assert_eq!(activity.next_deadline(deadline, LIMITS), None);
        // The write went through: nothing waits, the next look is an idle period away.
        activity.note_at(&activity.write_waiting_since, &Poll::Ready(()), at(66));
        assert_eq!(
            activity.next_deadline(deadline, LIMITS),
            Some(deadline + LIMITS.idle)
        );
        activity.note_at(&activity.read_waiting_since, &PENDING, at(70));
        assert_eq!(activity.next_deadline(at(129)(), LIMITS), Some(at(130)()));
        assert_eq!(activity.next_deadline(at(130)(), LIMITS), None);
    }
}
