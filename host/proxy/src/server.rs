//! The listener: accepts connections up to a cap, serves HTTP/1.1 and
//! cleartext HTTP/2 on each, and closes the ones that stall.
//!
//! Hyper bounds what a connection may send; this bounds how long it may
//! take. Every connection is watched by one timer task that knows its
//! phase from the bytes it reads and the requests it serves:
//!
//! * waiting for a request (just accepted, or bytes of a new request
//!   arrived): closed when the head has not arrived within
//!   `header_timeout`;
//! * idle between keep-alive requests with nothing sent: closed after
//!   `idle_timeout`;
//! * a request in progress with no byte moving either way for
//!   `busy_timeout` (a client that stopped reading its response): closed.
//!
//! A body that stalls is the handler's to answer (`408`, see the proxy's
//! `body_timeout`). On shutdown the listener closes, open connections are
//! asked to finish (HTTP/1 keep-alive off, HTTP/2 GOAWAY), and after
//! `shutdown_grace` the ones still open are dropped.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use http::{Request, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::Proxy;

/// How long a connection may take, and how many may be open.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// A request's head must arrive within this, counted from the accept
    /// or from the first byte after an idle spell. Default 10 s.
    pub header_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    /// Default 60 s.
    pub idle_timeout: Duration,
    /// A connection with a request in progress and no byte moving either
    /// way for this long is closed (a client that stopped reading). Default
    /// 90 s: longer than an upstream may take plus a body stall.
    pub busy_timeout: Duration,
    /// Connections served at once; past it each listener holds one more
    /// accepted connection unserved and stops accepting until one closes
    /// (clients wait in the kernel's backlog). Listeners served by
    /// [`serve_threads`] share one cap. Default from the open-file limit:
    /// half of it, less a reserve for the store and upstream sockets.
    pub max_connections: usize,
    /// After a shutdown signal, how long in-flight requests may take before
    /// their connections are dropped. Default 30 s.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            busy_timeout: Duration::from_secs(90),
            max_connections: default_max_connections(),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Half the process's open-file limit less a reserve (each client
/// connection may hold an upstream socket too; the store, the cache and
/// logs need some), between 16 and 16,384.
pub fn default_max_connections() -> usize {
    let files = open_file_limit().unwrap_or(1024);
    (files / 2)
        .saturating_sub(FILES_RESERVED / 2)
        .clamp(16, 16_384) as usize
}

/// Files kept for what is not a client connection or an upstream socket:
/// the store's connections, the policy cache, logs, the admin listener's
/// connections, the runtime's own.
const FILES_RESERVED: u64 = 64;

/// The upstream sockets `http` targets may hold open at once beside
/// `max_connections` client connections: what the open-file limit leaves
/// less a reserve, at least 16.
pub fn default_upstream_sockets(max_connections: usize) -> usize {
    let files = open_file_limit().unwrap_or(1024);
    files
        .saturating_sub(max_connections as u64)
        .saturating_sub(FILES_RESERVED)
        .max(16) as usize
}

/// Raises the soft open-file limit to the hard one (as most servers do at
/// start) and returns it; `None` where it cannot be read.
pub fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write `lim`.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return None;
            }
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim = raised;
                }
            }
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every Unix
        Some(lim.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    None
}

fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes `lim`.
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every Unix
        (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0)
            .then_some(lim.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    None
}

/// What answers a listener's requests: a router, or [`crate::public`]
/// called directly on the hot path.
pub type Handler = Arc<
    dyn Fn(Request<Body>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// `router` as a [`Handler`].
pub fn router_handler(router: Router) -> Handler {
    Arc::new(move |req| {
        let mut router = router.clone();
        Box::pin(async move {
            match tower_service::Service::call(&mut router, req).await {
                Ok(r) => r,
                Err(never) => match never {},
            }
        })
    })
}

/// Serves `router` on `listener` within `limits` until `shutdown`
/// resolves, then lets in-flight requests finish for up to
/// `limits.shutdown_grace`. `name` labels the connection metrics
/// (`switchyard_connections_open{listener}`,
/// `switchyard_connections_closed_total{listener,reason}`).
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    name: &'static str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_one(listener, router_handler(router), limits, name, shutdown).await
}

/// [`serve_router`] for any handler.
pub(crate) async fn serve_one(
    listener: TcpListener,
    handler: Handler,
    limits: ConnectionLimits,
    name: &'static str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    serve_handler(listener, handler, Arc::new(limits), slots, name, shutdown).await
}

/// Binds `workers` listening sockets to `addr`, all with `SO_REUSEPORT`,
/// so the kernel spreads new connections over them: one per serving
/// thread. The address is tried first without `SO_REUSEPORT`, so one
/// already in use (by another switchyard too) is an error, not a silent
/// share. Port 0 picks one free port for all.
pub fn bind_reuseport(addr: &str, workers: usize) -> io::Result<Vec<std::net::TcpListener>> {
    use std::net::ToSocketAddrs;
    let wanted = addr.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{addr} names no address"),
        )
    })?;
    // In use? And which port, for port 0.
    let at = std::net::TcpListener::bind(wanted)?.local_addr()?;
    (0..workers.max(1))
        .map(|_| {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(at),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            socket.set_reuse_address(true)?;
            #[cfg(unix)]
            socket.set_reuse_port(true)?;
            socket.set_nonblocking(true)?;
            socket.bind(&at.into())?;
            socket.listen(1024)?;
            Ok(socket.into())
        })
        .collect()
}

/// Serves `handler` on each of `listeners` (see [`bind_reuseport`]) from
/// a thread of its own running a single-threaded runtime: a
/// thread-per-core server, where a connection, its upstream connections
/// and its timers stay on one thread. `enter(i)` runs first on thread `i`
/// (to pick its own clients). All share one cap of
/// `limits.max_connections`. Returns the threads; each ends once
/// `shutdown` says `true` and its connections are done (or the grace is
/// over).
pub fn serve_threads(
    listeners: Vec<std::net::TcpListener>,
    handler: Handler,
    limits: ConnectionLimits,
    name: &'static str,
    shutdown: tokio::sync::watch::Receiver<bool>,
    enter: Arc<dyn Fn(usize) + Send + Sync>,
) -> io::Result<Vec<std::thread::JoinHandle<io::Result<()>>>> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let limits = Arc::new(limits);
    listeners
        .into_iter()
        .enumerate()
        .map(|(i, listener)| {
            let (handler, limits, slots, enter) = (
                handler.clone(),
                limits.clone(),
                slots.clone(),
                enter.clone(),
            );
            let mut shutdown = shutdown.clone();
            std::thread::Builder::new()
                .name(format!("switchyard-{name}-{i}"))
                .spawn(move || {
                    enter(i);
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    runtime.block_on(async move {
                        let listener = TcpListener::from_std(listener)?;
                        let stop = async move {
                            let _ = shutdown.wait_for(|s| *s).await;
                        };
                        serve_handler(listener, handler, limits, slots, name, stop).await
                    })
                })
        })
        .collect()
}

/// The accept loop: [`serve_router`]'s and each [`serve_threads`]
/// thread's.
async fn serve_handler(
    listener: TcpListener,
    handler: Handler,
    limits: Arc<ConnectionLimits>,
    slots: Arc<Semaphore>,
    name: &'static str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    let open = crate::catalogue::CONNECTIONS_OPEN.gauge(&[("listener", name)]);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => (stream, peer),
                Err(e) => {
                    // Out of descriptors, or a connection reset before it
                    // was accepted: wait a little and carry on.
                    tracing::warn!(target: "switchyard::server", error = %e, "accept failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                        _ = &mut shutdown => break,
                    }
                }
            },
            _ = &mut shutdown => break,
        };
        // The slot is taken after the accept, not before: listeners
        // sharing one cap (a thread each) must not each hold a slot while
        // waiting for a connection that may come to another. Past the
        // cap, a listener holds this one connection unserved and accepts
        // nothing more; the next clients wait in the kernel's backlog.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        // Small request/answer pairs: Nagle's algorithm would hold each
        // back for the client's delayed ACK.
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let service = ConnService {
            handler: handler.clone(),
            activity: activity.clone(),
        };
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let conn = builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        let conn = graceful.watch(conn);
        let limits = limits.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let _permit = permit;
            open.increment(1.0);
            let reason = tokio::select! {
                r = PEER.scope(peer, conn) => match r {
                    Ok(()) => "done",
                    Err(e) if head_too_large(&*e) => {
                        // hyper answered 431 itself (more than 100 header
                        // lines, or a head past its buffer), before any
                        // handler: counted as the public listener's own
                        // refusals are.
                        if name == "public" {
                            crate::catalogue::REQUESTS
                                .counter(&[("function", "-"), ("target", "none"), ("traffic", "none"), ("status", "431")])
                                .increment(1);
                        }
                        "head-too-large"
                    }
                    Err(_) => "error",
                },
                why = activity.expired(&limits) => why,
            };
            open.decrement(1.0);
            crate::catalogue::CONNECTIONS_CLOSED
                .counter(&[("listener", name), ("reason", reason)])
                .increment(1);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(
                target: "switchyard::server",
                grace = ?limits.shutdown_grace,
                "shutdown grace over; closing the connections still open"
            );
        }
    }
    Ok(())
}

/// What a connection is doing, as the timer task reads it. Times are
/// milliseconds since the connection was accepted.
struct Activity {
    start: Instant,
    /// Requests being served.
    in_flight: AtomicUsize,
    /// Requests served to the end.
    served: AtomicU64,
    /// When the connection last went idle (accept, or a response ended).
    idle_since: AtomicU64,
    /// When the first byte after going idle arrived (0: none yet).
    head_started: AtomicU64,
    /// When a byte last moved either way.
    last_progress: AtomicU64,
    /// The connection speaks HTTP/2: its frames (pings, settings) do not
    /// start a request head.
    h2: AtomicBool,
    /// Whether the start of the connection was looked at for the HTTP/2
    /// preface.
    sniffed: AtomicBool,
    /// The connection's first bytes, until there are enough to tell.
    start_bytes: std::sync::Mutex<Vec<u8>>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            last_progress: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            sniffed: AtomicBool::new(false),
            start_bytes: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Milliseconds since accept, never 0 (0 means "not yet").
    fn now(&self) -> u64 {
        (self.start.elapsed().as_millis() as u64).max(1)
    }

    fn read(&self, bytes: &[u8]) {
        let now = self.now();
        self.last_progress.store(now, Ordering::Relaxed);
        if !self.sniffed.load(Ordering::Relaxed) {
            // The preface may come in more than one read.
            const PREFACE: &[u8] = b"PRI * HTTP/2.0";
            let mut start = self.start_bytes.lock().unwrap_or_else(|e| e.into_inner());
            let want = PREFACE.len() - start.len();
            start.extend_from_slice(&bytes[..bytes.len().min(want)]);
            if start.len() == PREFACE.len() || !PREFACE.starts_with(&start) {
                let h2 = start[..] == *PREFACE;
                self.h2.store(h2, Ordering::Relaxed);
                if h2 {
                    // Its frames are not a request head.
                    self.head_started.store(0, Ordering::Release);
                }
                self.sniffed.store(true, Ordering::Relaxed);
                *start = Vec::new();
            }
        }
        if self.in_flight.load(Ordering::Acquire) == 0 && !self.h2.load(Ordering::Relaxed) {
            let _ = self
                .head_started
                .compare_exchange(0, now, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn wrote(&self) {
        self.last_progress.store(self.now(), Ordering::Relaxed);
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
        InFlight(self.clone())
    }

    /// Resolves with the reason once the connection has stalled past its
    /// phase's limit.
    async fn expired(&self, limits: &ConnectionLimits) -> &'static str {
        loop {
            let now = self.now();
            let ms = |d: Duration| d.as_millis() as u64;
            let (deadline, reason) = if self.in_flight.load(Ordering::Acquire) > 0 {
                (
                    self.last_progress.load(Ordering::Relaxed) + ms(limits.busy_timeout),
                    "busy-timeout",
                )
            } else {
                match self.head_started.load(Ordering::Acquire) {
                    // Kept alive after a request, or HTTP/2 (whose frames
                    // are not a request head): idle.
                    0 if self.served.load(Ordering::Relaxed) > 0
                        || self.h2.load(Ordering::Relaxed) =>
                    {
                        (
                            self.idle_since.load(Ordering::Relaxed) + ms(limits.idle_timeout),
                            "idle-timeout",
                        )
                    }
                    0 => (
                        self.idle_since.load(Ordering::Relaxed) + ms(limits.header_timeout),
                        "header-timeout",
                    ),
                    started => (started + ms(limits.header_timeout), "header-timeout"),
                }
            };
            if now >= deadline {
                tracing::debug!(target: "switchyard::server", reason, "connection closed");
                return reason;
            }
            // Wake at the deadline and look again: the phase may have
            // moved on meanwhile.
            tokio::time::sleep(Duration::from_millis(deadline - now)).await;
        }
    }
}

/// One request in progress; dropped when its response has been sent (or
/// abandoned).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since.store(a.now(), Ordering::Relaxed);
        a.served.fetch_add(1, Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The socket, telling the connection's [`Activity`] what moves.
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
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read(&buf.filled()[before..]);
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Whether a connection ended because hyper refused a request head too
/// large to parse (it answers `431` itself).
fn head_too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_parse_too_large)
}

/// The handler as a hyper service that marks each request in progress
/// until its response body is done.
#[derive(Clone)]
struct ConnService {
    handler: Handler,
    activity: Arc<Activity>,
}

tokio::task_local! {
    /// The address of the client of the connection whose task this is
    /// (what `X-Forwarded-For` gains on the way to a version): set once
    /// per connection, read without an allocation per request.
    static PEER: std::net::SocketAddr;
}

/// The address of the client whose request is being served, when it came
/// through a listener here.
pub(crate) fn peer() -> Option<std::net::SocketAddr> {
    PEER.try_with(|p| *p).ok()
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Tracked>;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let guard = self.activity.begin();
        let response = (self.handler)(req.map(Body::new));
        Box::pin(async move {
            Ok(response.await.map(|body| Tracked {
                inner: body,
                _guard: guard,
            }))
        })
    }
}

/// A response body that ends its request's [`InFlight`] when dropped.
struct Tracked {
    inner: Body,
    _guard: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// [`public`](crate::public) as a [`Handler`]: the public listener's hot path, without
/// a router in front.
pub fn public_handler(proxy: Arc<Proxy>) -> Handler {
    Arc::new(move |req| Box::pin(crate::public(proxy.clone(), req)))
}

/// Serves the public routes ([`public`](crate::public)) on `listener` within the proxy's
/// [`ConnectionLimits`] until `shutdown` resolves; in-flight requests get
/// the shutdown grace to finish. One listener on the calling runtime; see
/// [`serve_public_threads`] for a thread per core.
pub async fn serve(
    listener: tokio::net::TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = proxy.config.connections.clone();
    serve_one(listener, public_handler(proxy), limits, "public", shutdown).await
}

/// Serves the public routes thread-per-core: thread `i` runs a
/// single-threaded runtime accepting on `listeners[i]` (see
/// [`bind_reuseport`]) with its own upstream connections (the proxy's
/// `clients.workers` ([`ClientsConfig::workers`](crate::ClientsConfig::workers)) should be `listeners.len()`). The threads end
/// once `shutdown` says `true` and their connections are done.
pub fn serve_public_threads(
    listeners: Vec<std::net::TcpListener>,
    proxy: Arc<Proxy>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<Vec<std::thread::JoinHandle<std::io::Result<()>>>> {
    let limits = proxy.config.connections.clone();
    serve_threads(
        listeners,
        public_handler(proxy),
        limits,
        "public",
        shutdown,
        Arc::new(switchyard_dispatch::enter_worker),
    )
}

/// Serves [`admin_router`](crate::admin_router) on `listener` (the same connection limits)
/// until `shutdown` resolves.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = proxy.config.connections.clone();
    serve_router(
        listener,
        crate::admin_router(proxy),
        limits,
        "admin",
        shutdown,
    )
    .await
}
