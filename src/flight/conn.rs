//! Flight connections: a cap on how many are open, and an idle timeout.
//!
//! tonic serves whatever its incoming stream yields, so both limits live here, in the
//! stream of accepted connections ([`incoming`]) and the connection type ([`Conn`]):
//!
//! - **Cap** (`flight.max_connections`): every connection holds a semaphore permit
//!   until it closes. A connection accepted past the cap is closed at once, so the
//!   client fails fast (a connection error) instead of waiting in the kernel's backlog,
//!   and the connections already open keep being served.
//! - **Idle timeout** (`flight.idle_timeout_s`): a connection with no call in progress
//!   for that long is closed. Calls are counted by the route
//!   ([`super::wire::FlightRoutes`]), from the request until its response body is
//!   dropped, through the [`ConnInfo`] tonic puts into every request's extensions.
//!   Bytes are not activity: HTTP/2 keep-alive pings flow on idle connections too.
//!
//! Connections come from a TCP listener and, when `flight.unix_socket` is set, a Unix
//! domain socket too ([`Listener`]); both share the one cap.

use crate::sync::LockExt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::task::AtomicWaker;
use futures::{Stream, StreamExt};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tonic::Status;
use tonic::body::Body;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How long the accept loop pauses after an accept error (out of file descriptors,
/// say), so it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// At most one warning about refused connections per this interval.
const REFUSED_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Calls in progress on one connection, and since when there are none.
#[derive(Debug)]
pub struct Activity {
    calls: AtomicUsize,
    idle_since: Mutex<Instant>,
    /// The connection's reader, woken when the last call ends to arm its idle timer.
    waker: AtomicWaker,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            calls: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            waker: AtomicWaker::new(),
        })
    }

    /// Counts a call until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> CallGuard {
        self.calls.fetch_add(1, Ordering::AcqRel);
        CallGuard(Arc::clone(self))
    }

    /// When the connection became idle, or `None` while a call is in progress.
    fn idle_since(&self) -> Option<Instant> {
        let since = *self.idle_since.locked();
        (self.calls.load(Ordering::Acquire) == 0).then_some(since)
    }
}

/// One call in progress on a connection; see [`Activity::begin`].
#[derive(Debug)]
pub struct CallGuard(Arc<Activity>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        let a = &self.0;
        // The time is set before the count drops, so a reader that sees no calls also
        // sees the moment the last one ended.
        *a.idle_since.locked() = Instant::now();
        if a.calls.fetch_sub(1, Ordering::AcqRel) == 1 {
            a.waker.wake();
        }
    }
}

/// What tonic puts into every request's extensions for a [`Conn`].
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub tcp: TcpConnectInfo,
    pub activity: Arc<Activity>,
    /// Accepted on the Unix socket listener: the peer is on this host, so it may be
    /// told paths (the `local-read` action).
    pub unix: bool,
}

/// A response body that counts as a call in progress until it is dropped.
pub struct CallBody {
    inner: Body,
    _call: CallGuard,
}

impl CallBody {
    pub fn wrap(inner: Body, call: CallGuard) -> Body {
        Body::new(CallBody { inner, _call: call })
    }
}

impl HttpBody for CallBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where Flight connections are accepted.
pub enum Listener {
    Tcp(TcpListener),
    /// A Unix domain socket (`flight.unix_socket`), for clients on the same host.
    Unix(UnixListener),
}

/// The transport of one connection.
enum Io {
    Tcp(TcpStream),
    /// TCP under TLS (`[tls]`): the handshake is done before tonic sees it.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Unix(UnixStream),
}

impl Listener {
    async fn accept(&self) -> io::Result<(Io, Option<SocketAddr>)> {
        match self {
            Listener::Tcp(l) => l.accept().await.map(|(s, a)| (Io::Tcp(s), Some(a))),
            Listener::Unix(l) => l.accept().await.map(|(s, _)| (Io::Unix(s), None)),
        }
    }
}

/// Delegates a poll to the transport.
macro_rules! io_poll {
    ($self:ident, $s:ident => $e:expr) => {
        match &mut $self.io {
            Io::Tcp($s) => $e,
            Io::Tls($s) => $e,
            Io::Unix($s) => $e,
        }
    };
}

/// An accepted Flight connection: the stream, its slot under the cap, and its idle
/// timer.
pub struct Conn {
    io: Io,
    info: ConnInfo,
    idle: Option<Duration>,
    timer: Pin<Box<Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl Conn {
    /// True when the connection has had no call for the idle timeout; otherwise the
    /// timer is armed for the moment it would be.
    fn idled_out(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(idle) = self.idle else {
            return false;
        };
        let activity = &self.info.activity;
        activity.waker.register(cx.waker());
        let Some(since) = activity.idle_since() else {
            return false;
        };
        let deadline = tokio::time::Instant::from_std(since + idle);
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        self.timer.as_mut().poll(cx).is_ready()
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let read = io_poll!(self, s => Pin::new(s).poll_read(cx, buf));
        match read {
            Poll::Pending if self.idled_out(cx) => {
                tracing::debug!(peer = ?self.info.tcp.remote_addr, "closing an idle Flight connection (flight.idle_timeout_s)");
                // End of stream: the HTTP/2 connection ends, and with it this slot.
                Poll::Ready(Ok(()))
            }
            r => r,
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        io_poll!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        io_poll!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Tcp(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
            Io::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        io_poll!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        io_poll!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// The connections accepted on every listener, at most `max` open at once in all;
/// each closes after `idle` without a call (`None`: never). With `tls`, a TCP
/// connection is handed on once its TLS handshake is done (each handshake on a task of
/// its own, so a slow client delays no other; one that takes longer than
/// [`crate::tls::HANDSHAKE_TIMEOUT`] or fails is dropped, and a plain-text client never
/// gets an answer in clear).
pub fn incoming(
    listeners: Vec<Listener>,
    max: usize,
    idle: Option<Duration>,
    tls: Option<Arc<crate::tls::Tls>>,
) -> impl Stream<Item = io::Result<Conn>> + Send + 'static {
    let slots = Arc::new(Semaphore::new(max));
    let streams = listeners.into_iter().map(move |listener| {
        let state = (listener, Arc::clone(&slots), None::<Instant>);
        futures::stream::unfold(state, move |(listener, slots, mut warned)| async move {
            loop {
                let (io, peer) = match listener.accept().await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "Flight accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    if warned.is_none_or(|t| t.elapsed() >= REFUSED_LOG_INTERVAL) {
                        warned = Some(Instant::now());
                        tracing::warn!(
                            ?peer,
                            max,
                            "Flight connection refused: flight.max_connections reached"
                        );
                    }
                    drop(io);
                    continue;
                };
                return Some(((io, peer, slot), (listener, slots, warned)));
            }
        })
        .boxed()
    });
    let accepted_raw = futures::stream::select_all(streams);
    let Some(tls) = tls else {
        return accepted_raw
            .map(move |(io, peer, slot)| Ok(accepted(io, peer, slot, idle)))
            .boxed();
    };
    // Handshakes run on their own tasks; finished connections come through a channel.
    let (tx, rx) = tokio::sync::mpsc::channel::<Conn>(64);
    tokio::spawn(async move {
        let mut accepted_raw = std::pin::pin!(accepted_raw);
        loop {
            let next = tokio::select! {
                n = accepted_raw.next() => n,
                () = tx.closed() => None,
            };
            let Some((io, peer, slot)) = next else {
                return;
            };
            let tcp = match io {
                Io::Tcp(s) => s,
                other => {
                    let _ = tx.send(accepted(other, peer, slot, idle)).await;
                    continue;
                }
            };
            let acceptor = tls.acceptor(crate::tls::Side::Flight);
            let tx = tx.clone();
            tokio::spawn(async move {
                let local = tcp.local_addr().ok();
                let _ = tcp.set_nodelay(true);
                match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(s)) => {
                        let conn = accepted_tls(Io::Tls(Box::new(s)), local, peer, slot, idle);
                        let _ = tx.send(conn).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(?peer, error = %e, "Flight TLS handshake failed");
                    }
                    Err(_) => tracing::debug!(?peer, "Flight TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(Ok)
        .boxed()
}

/// A connection whose TLS handshake is done.
fn accepted_tls(
    io: Io,
    local_addr: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    slot: OwnedSemaphorePermit,
    idle: Option<Duration>,
) -> Conn {
    Conn {
        io,
        info: ConnInfo {
            tcp: TcpConnectInfo {
                local_addr,
                remote_addr: peer,
            },
            activity: Activity::new(),
            unix: false,
        },
        idle,
        timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        _slot: slot,
    }
}

fn accepted(
    io: Io,
    peer: Option<SocketAddr>,
    slot: OwnedSemaphorePermit,
    idle: Option<Duration>,
) -> Conn {
    let local_addr = match &io {
        Io::Tcp(s) => {
            if let Err(e) = s.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY on a Flight connection");
            }
            s.local_addr().ok()
        }
        Io::Tls(_) | Io::Unix(_) => None,
    };
    let unix = matches!(io, Io::Unix(_));
    let tcp = TcpConnectInfo {
        local_addr,
        remote_addr: peer,
    };
    Conn {
        io,
        info: ConnInfo {
            tcp,
            activity: Activity::new(),
            unix,
        },
        idle,
        timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        _slot: slot,
    }
}
