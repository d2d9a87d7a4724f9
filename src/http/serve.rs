//! The HTTP accept loop: hyper-util's connection builder with the limits that
//! `axum::serve` lacks.
//!
//! - **Header read timeout** (`http.header_read_timeout_s`): a new connection that has
//!   not sent a whole first request head in that time is closed (our own check, HTTP/2
//!   included).
//! - **Idle keep-alive timeout** (`http.keep_alive_idle_s`): a connection with no
//!   request in flight for that long since its last response is closed, whether it is
//!   silent or halfway through its next request head. hyper's own HTTP/1 header timer
//!   is set to the longer of the two: it starts when a kept-alive connection begins
//!   waiting for its next request, so at the header timeout it would close every idle
//!   keep-alive connection long before `keep_alive_idle_s`.
//! - **Connection cap** (`http.max_connections`, clamped below the open-file limit):
//!   each connection holds a semaphore permit. When all are taken, the accept loop
//!   closes the connection that has been idle longest (no request in flight: an idle
//!   keep-alive connection or one still sending its headers) and hands its permit to
//!   the new one, so `/health` stays answerable while slow or idle clients fill the
//!   cap. Only when every connection is busy with a request does a new one wait.
//!
//! Graceful shutdown stops accepting, lets in-flight requests finish and closes idle
//! connections.

use crate::sync::LockExt;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::config::HttpConfig;
use crate::tls::Tls;

/// File descriptors kept out of `http.max_connections` for the store, SQLite, Flight
/// and the listeners.
const FD_RESERVE: u64 = 256;

/// How often a connection waiting for a permit at the cap retries displacing an idle
/// one (a busy connection becomes idle without telling the accept loop).
const CAP_RETRY: Duration = Duration::from_millis(100);

/// The limits one listener serves with.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub keep_alive_idle: Duration,
    pub max_connections: usize,
}

impl Limits {
    /// The configured limits, with the connection cap clamped below the process's
    /// open-file limit (each connection is a descriptor; running out of them stalls
    /// every listener and every file open of the store).
    pub fn from_config(cfg: &HttpConfig) -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(cfg.header_read_timeout_s),
            keep_alive_idle: Duration::from_secs(cfg.keep_alive_idle_s),
            max_connections: clamp_to_fd_limit(cfg.max_connections, open_file_limit()),
        }
    }
}

/// `configured`, or less when the open-file limit would be reached first (logged).
pub fn clamp_to_fd_limit(configured: usize, fd_limit: Option<u64>) -> usize {
    let Some(limit) = fd_limit else {
        return configured;
    };
    let usable = usize::try_from(limit.saturating_sub(FD_RESERVE) / 2)
        .unwrap_or(usize::MAX)
        .max(1);
    if configured > usable {
        tracing::warn!(
            configured,
            fd_limit = limit,
            using = usable,
            "http.max_connections is above half the open-file limit (minus {FD_RESERVE} \
             reserved); lowering it. Raise `ulimit -n` to serve more connections"
        );
        return usable;
    }
    configured
}

/// The soft `RLIMIT_NOFILE`, when the platform reports one.
fn open_file_limit() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::resource::{Resource, getrlimit};
        getrlimit(Resource::RLIMIT_NOFILE)
            .ok()
            .map(|(soft, _)| soft)
            .filter(|&soft| soft != nix::sys::resource::RLIM_INFINITY)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Serves `router` on `listener` until `stop` turns true; HTTPS only with `tls`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<Arc<Tls>>,
    mut stop: watch::Receiver<bool>,
) {
    let conns = Arc::new(Conns::default());
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let builder = Arc::new(builder(&limits));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on the error.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(CAP_RETRY).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let Some(permit) = acquire(&permits, &conns, &mut stop).await else {
            break;
        };
        let conn = Connection {
            slot: conns.register(),
            conns: Arc::clone(&conns),
            _permit: permit,
        };
        let builder = Arc::clone(&builder);
        let router = router.clone();
        let stop = stop.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let Some(io) = secure(stream, peer, tls.as_deref(), &limits).await else {
                return;
            };
            conn.run(builder, io, peer, router, limits, stop).await;
        });
    }
    drop(listener);
    // Graceful shutdown: every connection task holds a permit until it ends.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
}

/// A connection's byte stream: plain TCP, or TCP under TLS.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// What a plain-text HTTP request to the HTTPS port is told before it is closed.
const PLAIN_TO_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
Connection: close\r\nContent-Length: 72\r\n\r\n\
This server speaks HTTPS only (tls.cert_path is set): use https:// URLs\n";

/// The stream to serve: `stream` itself without TLS; with it, the stream after a TLS
/// handshake (within the header read timeout). A client that speaks plain HTTP gets a
/// plain 400 saying to use HTTPS, and nothing else; a failed handshake, nothing.
async fn secure(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<&Tls>,
    limits: &Limits,
) -> Option<Box<dyn Transport>> {
    let Some(tls) = tls else {
        return Some(Box::new(stream));
    };
    let deadline = limits
        .header_read_timeout
        .min(crate::tls::HANDSHAKE_TIMEOUT);
    let mut first = [0u8; 1];
    match tokio::time::timeout(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return None,
    }
    // 0x16: a TLS handshake record. Anything else is not TLS; a letter is most likely
    // an HTTP method.
    if first[0] != 0x16 {
        if first[0].is_ascii_uppercase() {
            let mut stream = stream;
            let _ = tokio::time::timeout(deadline, stream.write_all(PLAIN_TO_TLS)).await;
            let _ = stream.shutdown().await;
        }
        tracing::debug!(%peer, "plain-text connection to the HTTPS listener refused");
        return None;
    }
    let acceptor = tls.acceptor(crate::tls::Side::Http);
    match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(Box::new(s)),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "HTTPS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "HTTPS handshake timed out");
            None
        }
    }
}

/// Resolves when the server is told to stop (or its stop handle is gone). The
/// `watch::Ref` is dropped inside, so callers' futures stay `Send`.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn builder(limits: &Limits) -> Builder<TokioExecutor> {
    let mut b = Builder::new(TokioExecutor::new());
    // hyper runs this timer from the moment a kept-alive connection waits for its next
    // request, so it is an idle limit too: never shorter than the keep-alive one
    // (`Connection::run` enforces both limits itself).
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.max(limits.keep_alive_idle));
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.keep_alive_idle / 2)
        .keep_alive_timeout(limits.header_read_timeout);
    b
}

/// A permit for a new connection: a free one, or the one of the connection idle
/// longest, which is closed for it. `None` when the server stops meanwhile.
async fn acquire(
    permits: &Arc<Semaphore>,
    conns: &Conns,
    stop: &mut watch::Receiver<bool>,
) -> Option<OwnedSemaphorePermit> {
    loop {
        if let Ok(p) = Arc::clone(permits).try_acquire_owned() {
            return Some(p);
        }
        conns.evict_oldest_idle();
        tokio::select! {
            p = Arc::clone(permits).acquire_owned() => return p.ok(),
            _ = tokio::time::sleep(CAP_RETRY) => {}
            () = stopped(stop) => return None,
        }
    }
}

/// The live connections, so the accept loop can pick one to displace.
#[derive(Default)]
struct Conns {
    next_id: AtomicU64,
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
}

/// What the accept loop and the timers know of one connection.
struct Slot {
    id: u64,
    /// Requests whose response has not been sent in full.
    in_flight: AtomicUsize,
    /// Requests started on this connection.
    requests: AtomicU64,
    /// When the connection last became idle (accept time before its first request).
    idle_since: Mutex<Instant>,
    evicted: AtomicBool,
    evict: Notify,
    /// Signalled when a response is sent in full, so the idle deadline is computed
    /// again from then.
    finished: Notify,
}

impl Slot {
    fn idle_since(&self) -> Instant {
        *self.idle_since.locked()
    }
}

impl Conns {
    fn register(&self) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: Mutex::new(Instant::now()),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
            finished: Notify::new(),
        });
        self.lock().insert(slot.id, Arc::clone(&slot));
        slot
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        self.slots.locked()
    }

    /// Tells the connection idle longest to close; false when every one is busy.
    fn evict_oldest_idle(&self) -> bool {
        let slots = self.lock();
        let victim = slots
            .values()
            .filter(|s| s.in_flight.load(Ordering::Acquire) == 0)
            .filter(|s| !s.evicted.load(Ordering::Acquire))
            .min_by_key(|s| s.idle_since());
        match victim {
            Some(s) => {
                s.evicted.store(true, Ordering::Release);
                s.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// One accepted connection: its slot (removed on drop) and its permit.
struct Connection {
    slot: Arc<Slot>,
    conns: Arc<Conns>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.conns.lock().remove(&self.slot.id);
    }
}

impl Connection {
    async fn run(
        self,
        builder: Arc<Builder<TokioExecutor>>,
        stream: Box<dyn Transport>,
        peer: SocketAddr,
        router: Router,
        limits: Limits,
        mut stop: watch::Receiver<bool>,
    ) {
        let slot = Arc::clone(&self.slot);
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let guard = InFlight::start(Arc::clone(&slot));
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            let call = router.clone().oneshot(req);
            async move {
                let resp = call.await?;
                Ok::<_, Infallible>(resp.map(|body| TrackedBody {
                    body,
                    _guard: guard,
                }))
            }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let mut closing = false;
        loop {
            let deadline = self.idle_deadline(&limits);
            tokio::select! {
                // A response went out: the connection may be idle from now on.
                _ = self.slot.finished.notified(), if !closing => continue,
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "http connection ended with an error");
                    }
                    return;
                }
                // Displaced at the cap: close at once, unless a request started since
                // it was chosen (then finish that one and close).
                _ = self.slot.evict.notified(), if !closing => {
                    if self.slot.in_flight.load(Ordering::Acquire) == 0 {
                        return;
                    }
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                // Shutdown: an idle connection (even one halfway through a request
                // head, which hyper's graceful shutdown would wait on) is closed at
                // once; one with a request in flight finishes it first.
                () = stopped(&mut stop), if !closing => {
                    if self.slot.in_flight.load(Ordering::Acquire) == 0 {
                        return;
                    }
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = tokio::time::sleep_until(deadline), if !closing => {
                    // The connection may have been busy meanwhile: look again.
                    if self.idle_deadline(&limits) > Instant::now() {
                        continue;
                    }
                    // Idle past its limit with no request in flight (the deadline of a
                    // busy connection is always ahead): silent, or halfway through a
                    // request head, which a graceful shutdown would wait on. Close.
                    assert_eq!(self.slot.in_flight.load(Ordering::Acquire), 0);
                    return;
                }
            }
        }
    }

    /// When this connection, if still idle then, is closed: the header read timeout
    /// before its first request, the keep-alive idle timeout after.
    fn idle_deadline(&self, limits: &Limits) -> Instant {
        let since = self.slot.idle_since();
        if self.slot.in_flight.load(Ordering::Acquire) > 0 {
            return Instant::now() + limits.keep_alive_idle;
        }
        if self.slot.requests.load(Ordering::Acquire) == 0 {
            return since + limits.header_read_timeout;
        }
        since + limits.keep_alive_idle
    }
}

/// Marks a request in flight on its connection until the response body is dropped
/// (sent in full, or abandoned).
struct InFlight(Arc<Slot>);

impl InFlight {
    fn start(slot: Arc<Slot>) -> InFlight {
        slot.requests.fetch_add(1, Ordering::AcqRel);
        slot.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(slot)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.idle_since.locked() = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.finished.notify_one();
    }
}

/// A response body that keeps its request counted as in flight.
struct TrackedBody {
    body: Body,
    _guard: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_open_file_limit() {
        assert_eq!(clamp_to_fd_limit(1024, None), 1024);
        assert_eq!(clamp_to_fd_limit(1024, Some(65_536)), 1024);
        assert_eq!(clamp_to_fd_limit(1024, Some(1024)), 384);
        assert_eq!(clamp_to_fd_limit(1024, Some(100)), 1);
    }

    #[tokio::test]
    async fn the_longest_idle_connection_is_displaced_first() {
        let conns = Conns::default();
        let old = conns.register();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let busy = conns.register();
        let young = conns.register();
        let _guard = InFlight::start(Arc::clone(&busy));
        *busy.idle_since.lock().unwrap() = Instant::now() - Duration::from_secs(60);
        assert!(conns.evict_oldest_idle());
        assert!(old.evicted.load(Ordering::Acquire));
        assert!(
            !busy.evicted.load(Ordering::Acquire),
            "a busy connection is never displaced"
        );
        assert!(conns.evict_oldest_idle());
        assert!(young.evicted.load(Ordering::Acquire));
        assert!(!conns.evict_oldest_idle(), "only the busy one is left");
    }
}
