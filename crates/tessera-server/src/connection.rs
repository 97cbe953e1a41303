//! One accepted connection, from its TLS handshake to its close: HTTP/1.1 or HTTP/2 served by
//! hyper, the peer's address given to every request, and a watchdog that closes connections
//! left silent ([`crate::serve`] describes the timeouts).
//!
//! The watchdog is one timer per connection, re-armed only when it fires. Wrapping the socket
//! in a stream with read and write timeouts, as before, reset a timer on every read and every
//! write, and hyper's own HTTP/1.1 head timer was boxed, armed and dropped for every request:
//! each about 1 k instructions of a request (`docs/performance.md`). Here a read or write that
//! cannot complete notes when it began, and the connection notes when it began waiting for a
//! request head, each in an atomic; the watchdog reads those notes when its timer fires.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::http::{Request, Version};
use axum::response::Response;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
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
    /// A connection waiting this long for a whole request head closes: from its opening
    /// (HTTP/2 included) and, on HTTP/1.1, from the end of each response, however slowly the
    /// head trickles.
    pub(crate) head: Duration,
}

impl<S> Listening<S> {
    /// Serves `app` on each connection, over TLS when `tls` is given.
    pub(crate) fn new(app: S, tls: Option<Arc<rustls::ServerConfig>>, limits: Limits) -> Self {
        let mut http = auto::Builder::new(TokioExecutor::new());
        // The whole head must arrive within `limits.head`, however slowly it trickles (a
        // slowloris client cannot hold a connection by sending a byte now and then): kept by
        // the watchdog, so hyper's per-request head timer is off.
        http.http1().header_read_timeout(None);
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
    type Future = Answering<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.app.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Incoming>) -> Self::Future {
        self.activity.head_received(request.version());
        request.extensions_mut().insert(ConnectInfo(self.peer));
        Answering {
            answer: self.app.call(request),
            activity: Arc::clone(&self.activity),
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer to one request, noting in [`Activity`] when it is ready.
    struct Answering<F> {
        #[pin]
        answer: F,
        activity: Arc<Activity>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for Answering<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let Poll::Ready(Ok(response)) = this.answer.poll(cx) else {
            return Poll::Pending;
        };
        // A body of known length is written at once (every answer of tessera's); a streamed
        // one is followed to its end, at the cost of a box.
        if response.body().size_hint().exact().is_some() {
            this.activity.response_done(Instant::now);
            return Poll::Ready(Ok(response));
        }
        let activity = Arc::clone(this.activity);
        Poll::Ready(Ok(
            response.map(|body| axum::body::Body::new(Streamed { body, activity }))
        ))
    }
}

pin_project_lite::pin_project! {
    /// A streamed response body, noting in [`Activity`] when it ends.
    struct Streamed {
        #[pin]
        body: axum::body::Body,
        activity: Arc<Activity>,
    }
}

impl HttpBody for Streamed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut this = self.project();
        let frame = this.body.as_mut().poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) || this.body.is_end_stream() {
            this.activity.response_done(Instant::now);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What the watchdog of one connection reads, each noted as microseconds after `opened`, plus
/// one (0: not waiting): since when the connection waits for a request head, and since when
/// a read or a write has been waiting.
struct Activity {
    opened: Instant,
    /// From the opening; cleared by each request head, and set again by each response on
    /// HTTP/1.1 (HTTP/2 multiplexes requests: only its first head is waited for).
    head_waiting_since: AtomicU64,
    http2: AtomicBool,
    read_waiting_since: AtomicU64,
    write_waiting_since: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            head_waiting_since: AtomicU64::new(1),
            http2: AtomicBool::new(false),
            read_waiting_since: AtomicU64::new(0),
            write_waiting_since: AtomicU64::new(0),
        }
    }

    /// Notes `now` in `note` (see [`Activity`]).
    fn note_time(&self, note: &AtomicU64, now: Instant) {
        let since = now.saturating_duration_since(self.opened);
        let micros = u64::try_from(since.as_micros()).unwrap_or(u64::MAX);
        note.store(micros.saturating_add(1), Ordering::Relaxed);
    }

    /// A whole request head arrived.
    fn head_received(&self, version: Version) {
        if version == Version::HTTP_2 && !self.http2.load(Ordering::Relaxed) {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.head_waiting_since.store(0, Ordering::Relaxed);
    }

    /// A response was handed over whole (the next HTTP/1.1 head is waited for from now).
    fn response_done(&self, now: impl Fn() -> Instant) {
        if !self.http2.load(Ordering::Relaxed) {
            self.note_time(&self.head_waiting_since, now());
        }
    }

    /// Notes the outcome of a read poll: when it began waiting, or that it did not.
    fn note_read<T>(&self, poll: &Poll<T>) {
        self.note_at(&self.read_waiting_since, poll, Instant::now);
    }

    /// Notes the outcome of a write poll. A response whose writing had to wait (a client slow
    /// to read it) is waited for under the idle limit; the head limit starts again once the
    /// writing goes on.
    fn note_write<T>(&self, poll: &Poll<T>) {
        self.note_write_at(poll, Instant::now);
    }

    fn note_write_at<T>(&self, poll: &Poll<T>, now: impl Fn() -> Instant) {
        let wait_ended = self.note_at(&self.write_waiting_since, poll, &now);
        if wait_ended && self.head_waiting_since.load(Ordering::Relaxed) != 0 {
            self.note_time(&self.head_waiting_since, now());
        }
    }

    /// Notes a poll's outcome in `waiting_since`, reading the clock only when a wait begins;
    /// true when a wait ended.
    fn note_at<T>(
        &self,
        waiting_since: &AtomicU64,
        poll: &Poll<T>,
        now: impl Fn() -> Instant,
    ) -> bool {
        let noted = waiting_since.load(Ordering::Relaxed);
        match poll {
            Poll::Pending if noted == 0 => {
                self.note_time(waiting_since, now());
                false
            }
            Poll::Ready(_) if noted != 0 => {
                waiting_since.store(0, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Resolves when the connection must close (see [`Limits`]).
    async fn watchdog(self: Arc<Self>, limits: Limits) {
        let mut deadline = self.opened + limits.head.min(limits.idle);
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
        let noted = |since: &AtomicU64| {
            let since = since.load(Ordering::Relaxed);
            (since != 0).then(|| self.opened + Duration::from_micros(since - 1))
        };
        let mut next = now + limits.idle;
        let writing = noted(&self.write_waiting_since);
        if let Some(waiting) = noted(&self.head_waiting_since)
            && writing.is_none()
        {
            next = next.min(waiting + limits.head);
        }
        for began in [noted(&self.read_waiting_since), writing]
            .into_iter()
            .flatten()
        {
            next = next.min(began + limits.idle);
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
        this.activity.note_read(&poll);
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
        this.activity.note_write(&poll);
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.activity.note_write(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.activity.note_write(&poll);
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
        head: Duration::from_secs(10),
    };
    const PENDING: Poll<()> = Poll::Pending;
    const READY: Poll<()> = Poll::Ready(());

    fn seconds(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_connection_without_a_request_closes_at_the_head_limit() {
        let activity = Activity::new();
        let opened = activity.opened;
        assert_eq!(
            activity.next_deadline(opened + seconds(1), LIMITS),
            Some(opened + LIMITS.head)
        );
        assert_eq!(activity.next_deadline(opened + LIMITS.head, LIMITS), None);
        // A head came: only the idle limit is left while the request is answered.
        activity.head_received(Version::HTTP_11);
        let later = opened + LIMITS.head;
        assert_eq!(
            activity.next_deadline(later, LIMITS),
            Some(later + LIMITS.idle)
        );
    }

    #[test]
    fn on_http1_each_response_starts_the_head_limit_again_and_on_http2_none_does() {
        let activity = Activity::new();
        let opened = activity.opened;
        let at = |n| move || opened + seconds(n);
        activity.head_received(Version::HTTP_11);
        // While the request is answered, only the idle limit applies.
        assert_eq!(activity.next_deadline(at(15)(), LIMITS), Some(at(75)()));
        activity.response_done(at(20));
        assert_eq!(activity.next_deadline(at(21)(), LIMITS), Some(at(30)()));
        assert_eq!(activity.next_deadline(at(30)(), LIMITS), None);

        let multiplexed = Activity::new();
        let opened = multiplexed.opened;
        multiplexed.head_received(Version::HTTP_2);
        multiplexed.response_done(|| opened + seconds(20));
        let later = opened + seconds(31);
        assert_eq!(
            multiplexed.next_deadline(later, LIMITS),
            Some(later + LIMITS.idle)
        );
    }

    #[test]
    fn a_response_slow_to_be_read_is_under_the_idle_limit_and_then_the_head_limit() {
        let activity = Activity::new();
        let opened = activity.opened;
        let at = |n| move || opened + seconds(n);
        activity.head_received(Version::HTTP_11);
        activity.response_done(at(1));
        // The client does not read: the write waits from 2 s, well past the head limit.
        activity.note_write_at(&PENDING, at(2));
        assert_eq!(activity.next_deadline(at(15)(), LIMITS), Some(at(62)()));
        // It reads at 50 s: the next head is waited for from then.
        activity.note_write_at(&READY, at(50));
        assert_eq!(activity.next_deadline(at(51)(), LIMITS), Some(at(60)()));
        assert_eq!(activity.next_deadline(at(60)(), LIMITS), None);
    }

    #[tokio::test]
    async fn a_streamed_response_starts_the_head_limit_when_it_ends() {
        let activity = Arc::new(Activity::new());
        activity.head_received(Version::HTTP_11);
        let chunks = ["a", "b"].map(|chunk| Ok::<_, io::Error>(Bytes::from(chunk)));
        let body = axum::body::Body::from_stream(futures_util::stream::iter(chunks));
        let answer = Answering {
            answer: std::future::ready(Ok::<_, Infallible>(Response::new(body))),
            activity: Arc::clone(&activity),
        };
        let Ok(response) = answer.await;
        let waiting = || activity.head_waiting_since.load(Ordering::Relaxed);
        assert_eq!(waiting(), 0, "not before its body is written");
        let body = response.into_body();
        tokio::pin!(body);
        let mut frames = 0;
        while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            assert!(frame.is_ok());
            frames += 1;
            if frames < 2 {
                assert_eq!(waiting(), 0, "not halfway");
            }
        }
        assert_eq!(frames, 2);
        assert_ne!(waiting(), 0, "from its end");
    }

    #[test]
    fn a_read_or_write_waiting_past_the_idle_limit_closes_and_progress_clears_it() {
        let activity = Activity::new();
        activity.head_received(Version::HTTP_11);
        let opened = activity.opened;
        let at = |n| move || opened + seconds(n);
        activity.note_write_at(&PENDING, at(5));
        // Still waiting 30 s later: the first note stands.
        activity.note_write_at(&PENDING, at(35));
        let deadline = opened + seconds(5) + LIMITS.idle;
        assert_eq!(activity.next_deadline(at(35)(), LIMITS), Some(deadline));
        assert_eq!(activity.next_deadline(deadline, LIMITS), None);
        // The write went through: nothing waits, the next look is an idle period away.
        activity.note_write_at(&READY, at(66));
        assert_eq!(
            activity.next_deadline(deadline, LIMITS),
            Some(deadline + LIMITS.idle)
        );
        activity.note_at(&activity.read_waiting_since, &PENDING, at(70));
        assert_eq!(activity.next_deadline(at(129)(), LIMITS), Some(at(130)()));
        assert_eq!(activity.next_deadline(at(130)(), LIMITS), None);
    }
}
