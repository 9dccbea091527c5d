//! Running the HTTP server: hyper (HTTP/1.1, and HTTP/2 by ALPN over TLS), each connection
//! watched so that a slow client cannot hold it, graceful drain on shutdown.
//!
//! Connection rules (`[server]`):
//! - a request's head must arrive within `header_read_timeout_secs` of its first byte (for a
//!   connection's first request, of the connection's opening), else the connection is closed:
//!   a client sending headers byte by byte (slowloris) holds a connection that long at most;
//! - a keep-alive connection with no request in flight is closed after
//!   `keep_alive_idle_secs`, never sooner: a client reusing it within that time is served;
//! - above `max_connections` open connections, idle keep-alive connections are closed and a
//!   connection still sending its head gets one second, so well-behaved clients get in;
//! - a head larger than `max_header_bytes` is answered 431; a stalled body 408 (the body
//!   timeout layer).

use crate::state::AppState;
use axum::extract::ConnectInfo;
use datagate_core::config::ServerConfig;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

/// The full application: the API routes and the portal, in the layers. The portal sends its
/// requests to this same application (see [`crate::portal::client`]), so it gets a handle to
/// it once built.
pub fn app(state: AppState) -> axum::Router {
    let api = crate::portal::client::Api::default();
    let router =
        crate::routes::router(state.clone()).merge(crate::portal::router(&state, api.clone()));
    let app = crate::layers::apply(router, &state);
    api.set(app.clone());
    app
}

/// Serves `state` on `listener` until `shutdown` resolves, then stops accepting and gives
/// in-flight requests `server.shutdown_grace_secs` to finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let cfg = state.config.server.clone();
    let tls = crate::tls::acceptor(&cfg)?;
    let app = app(state);
    let builder = Arc::new(builder(&cfg));
    let rules = Arc::new(Rules::from(&cfg));
    let open = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let tasks = tokio_util::task::TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = Conn {
                    app: app.clone(),
                    builder: builder.clone(),
                    rules: rules.clone(),
                    open: open.clone(),
                    stop: stop_rx.clone(),
                    peer,
                };
                let tls = tls.clone();
                tasks.spawn(async move {
                    match tls {
                        None => conn.run(stream).await,
                        Some(acceptor) => {
                            // The handshake counts as the first request's head.
                            let limit = conn.rules.header_timeout;
                            match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => conn.run(stream).await,
                                Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        }
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(
        grace_secs = cfg.shutdown_grace_secs,
        "shutting down: draining connections"
    );
    let _ = stop_tx.send(true);
    tasks.close();
    tokio::select! {
        _ = tasks.wait() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(Duration::from_secs(cfg.shutdown_grace_secs)) => {
            tracing::warn!("grace period over; closing remaining connections");
        }
    }
    Ok(())
}

/// hyper's connection settings: HTTP/1.1 with keep-alive and a bounded head, HTTP/2 when a
/// client asks for it (ALPN over TLS, or prior knowledge). The head timeout is the
/// watchdog's, not hyper's, whose timer also runs while a keep-alive connection is idle.
fn builder(cfg: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true)
        .max_buf_size(cfg.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(128)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// The watchdog's limits.
struct Rules {
    header_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
    /// How long a head may take when over `max_connections`.
    pressed_header_timeout: Duration,
}

impl From<&ServerConfig> for Rules {
    fn from(cfg: &ServerConfig) -> Self {
        let header_timeout = Duration::from_secs(cfg.header_read_timeout_secs.max(1));
        Self {
            header_timeout,
            idle_timeout: Duration::from_secs(cfg.keep_alive_idle_secs.max(1)),
            max_connections: cfg.max_connections.max(1),
            pressed_header_timeout: header_timeout.min(Duration::from_secs(1)),
        }
    }
}

/// One accepted connection and what it needs to be served.
struct Conn {
    app: axum::Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    rules: Arc<Rules>,
    open: Arc<AtomicUsize>,
    stop: watch::Receiver<bool>,
    peer: SocketAddr,
}

/// What the watchdog knows of a connection, kept by its reads and its requests.
struct Activity {
    start: Instant,
    /// Requests whose response has not finished.
    in_flight: AtomicUsize,
    /// A head is being read: bytes arrived while no request was in flight (or the connection
    /// just opened).
    head_pending: AtomicBool,
    /// When the pending head began, or the connection went idle (ms since `start`).
    since_ms: AtomicU64,
    /// The watchdog cut the connection: close at once, without lingering.
    cut: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            head_pending: AtomicBool::new(true),
            since_ms: AtomicU64::new(0),
            cut: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && !self.head_pending.swap(true, Ordering::AcqRel)
        {
            self.since_ms.store(self.now_ms(), Ordering::Release);
        }
    }

    fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_pending.store(false, Ordering::Release);
        RequestGuard(self.clone())
    }

    /// What to do now under `rules`, with `pressed` when over the connection limit.
    fn verdict(&self, rules: &Rules, pressed: bool) -> Verdict {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Verdict::Keep;
        }
        let waited = Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.since_ms.load(Ordering::Acquire)),
        );
        if self.head_pending.load(Ordering::Acquire) {
            let limit = if pressed {
                rules.pressed_header_timeout
            } else {
                rules.header_timeout
            };
            if waited >= limit {
                return Verdict::Drop;
            }
        } else if pressed || waited >= rules.idle_timeout {
            return Verdict::Close;
        }
        Verdict::Keep
    }
}

/// Marks a request in flight until its response body is done (or dropped).
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let a = &self.0;
        if a.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            a.since_ms.store(a.now_ms(), Ordering::Release);
        }
    }
}

enum Verdict {
    Keep,
    /// Idle: close gracefully (nothing is in flight).
    Close,
    /// A head that did not arrive in time: drop the connection.
    Drop,
}

/// A response body that keeps its request in flight until it is written or dropped. Its size
/// is the inner body's, so a body of known length still goes out with `Content-Length`.
struct InFlight {
    inner: axum::body::Body,
    _guard: RequestGuard,
}

impl hyper::body::Body for InFlight {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Counts a connection as open while it lives.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Conn {
    async fn run<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.open.fetch_add(1, Ordering::AcqRel);
        let _open = OpenGuard(self.open.clone());
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            inner: Some(stream),
            activity: activity.clone(),
        });
        let (app, peer) = (self.app.clone(), self.peer);
        let requests = activity.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            let guard = requests.request_started();
            let app = app.clone();
            async move {
                let resp = app.oneshot(req).await?;
                // The request stays in flight until its body is written (or dropped).
                Ok::<_, std::convert::Infallible>(resp.map(|body| {
                    axum::body::Body::new(InFlight {
                        inner: body,
                        _guard: guard,
                    })
                }))
            }
        });
        let conn = self.builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(conn);
        let mut stop = self.stop.clone();
        let tick = (self.rules.header_timeout / 4)
            .clamp(Duration::from_millis(100), Duration::from_millis(500));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut closing = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                    return;
                }
                _ = stop.changed(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = ticker.tick() => {
                    let pressed = self.open.load(Ordering::Acquire) > self.rules.max_connections;
                    match activity.verdict(&self.rules, pressed) {
                        Verdict::Keep => {}
                        Verdict::Close if !closing => {
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                        Verdict::Close => {}
                        Verdict::Drop => {
                            activity.cut.store(true, Ordering::Release);
                            metrics::counter!("datagate_connections_timed_out_total").increment(1);
                            tracing::debug!(%peer, "request head not received in time; connection closed");
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// A connection's byte stream that tells its [`Activity`] when bytes arrive, and lingers when
/// it is closed (see [`linger`]).
struct Watched<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    inner: Option<S>,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Watched<S> {
    fn io(&mut self) -> Pin<&mut S> {
        Pin::new(self.inner.as_mut().expect("the stream lives until drop"))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Watched<S> {
    fn drop(&mut self) {
        if let Some(stream) = self.inner.take()
            && !self.activity.cut.load(Ordering::Acquire)
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(linger(stream));
        }
    }
}

/// Reads and discards what the client still sends before the socket is closed (nginx's
/// lingering close). An answer given before the request body was read (413, 422 with its line,
/// 507, 408) would otherwise be lost: closing a socket with unread data resets it, and the
/// reset discards the answer on its way to the client. Bounded: 2 s without data, 30 s or
/// 64 MiB in all.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The client sees the end of the answer at once; only its sending side is drained.
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.shutdown()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = vec![0u8; 64 * 1024];
    let mut drained = 0usize;
    while Instant::now() < deadline && drained < 64 << 20 {
        match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = self.io().poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        result
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            header_timeout: Duration::from_millis(200),
            idle_timeout: Duration::from_millis(400),
            max_connections: 10,
            pressed_header_timeout: Duration::from_millis(50),
        }
    }

    #[test]
    fn a_head_must_arrive_in_time_and_an_idle_connection_waits_for_the_idle_limit() {
        let a = Arc::new(Activity::new());
        assert!(matches!(a.verdict(&rules(), false), Verdict::Keep));
        std::thread::sleep(Duration::from_millis(250));
        // The first head never came.
        assert!(matches!(a.verdict(&rules(), false), Verdict::Drop));
        let guard = a.request_started();
        std::thread::sleep(Duration::from_millis(450));
        // A slow response is never cut.
        assert!(matches!(a.verdict(&rules(), false), Verdict::Keep));
        drop(guard);
        // Idle past the head timeout, within the idle limit: kept (the old bug closed it).
        std::thread::sleep(Duration::from_millis(250));
        assert!(matches!(a.verdict(&rules(), false), Verdict::Keep));
        std::thread::sleep(Duration::from_millis(200));
        assert!(matches!(a.verdict(&rules(), false), Verdict::Close));
    }

    #[test]
    fn the_head_timeout_starts_at_the_first_byte_of_the_next_request() {
        let a = Arc::new(Activity::new());
        drop(a.request_started());
        std::thread::sleep(Duration::from_millis(300));
        a.read(); // the next request begins
        std::thread::sleep(Duration::from_millis(100));
        assert!(matches!(a.verdict(&rules(), false), Verdict::Keep));
        std::thread::sleep(Duration::from_millis(150));
        assert!(matches!(a.verdict(&rules(), false), Verdict::Drop));
    }

    #[test]
    fn under_pressure_idle_connections_close_and_heads_get_less_time() {
        let a = Arc::new(Activity::new());
        drop(a.request_started());
        assert!(matches!(a.verdict(&rules(), true), Verdict::Close));
        a.read();
        std::thread::sleep(Duration::from_millis(60));
        assert!(matches!(a.verdict(&rules(), true), Verdict::Drop));
        assert!(matches!(a.verdict(&rules(), false), Verdict::Keep));
    }
}
