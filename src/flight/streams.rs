//! Admission and bookkeeping of DoGet/DoPut streams.
//!
//! DoGet and DoPut draw from two pools: DoGet streams hold one permit of a semaphore
//! sized by `flight.max_concurrent_streams`, DoPut streams one of
//! `flight.max_put_streams`, so readers that stall can never lock writers out (and a
//! burst of uploads never locks readers out). Every stream also holds one
//! [`StreamGuard`] that keeps the `flight_streams_open` gauge honest: the guard is
//! shared by the response stream and the blocking producer behind it, so the gauge
//! drops (and the permit returns) only when both are gone, which is also when the last
//! chunk mapping of the stream is released. A client that disconnects drops the
//! response stream; the producer then fails its next send and exits, dropping the guard.
//!
//! A client that stays connected but stops reading would hold its slot for as long as
//! it likes: the transport stops asking for the next message once the flow-control
//! window is full, and nothing else ends the stream. [`Watched`] therefore notes when
//! it last handed a message to the transport, and a watchdog task ends the stream when
//! the transport has not asked for the next one within `flight.stall_timeout_s`: it
//! drops the producer side and the guard (freeing the slot at once) and the stream's
//! last item, should the client ever read on, is `DeadlineExceeded`.

use crate::sync::LockExt;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use futures::stream::BoxStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tonic::{Code, Status};

use super::error::{code_name, status};
use crate::error::{Error, ErrorKind};
use crate::query::Engine;

/// Counts one open stream; see the module documentation.
#[derive(Debug)]
pub struct StreamGuard {
    engine: Arc<Engine>,
    method: &'static str,
    outcome: Mutex<Option<Code>>,
    _permit: OwnedSemaphorePermit,
}

/// The two stream pools; see the module documentation.
#[derive(Debug)]
pub struct Pools {
    get: Arc<Semaphore>,
    put: Arc<Semaphore>,
}

/// Which pool a stream draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    Get,
    Put,
}

impl Pools {
    pub fn new(engine: &Engine) -> Pools {
        let f = &engine.config.flight;
        Pools {
            get: Arc::new(Semaphore::new(f.max_concurrent_streams)),
            put: Arc::new(Semaphore::new(f.max_put_streams)),
        }
    }
}

/// Admits a new stream of `method` from `pool`, or refuses it when the pool is full.
pub fn admit(
    engine: &Arc<Engine>,
    pools: &Pools,
    pool: Pool,
    method: &'static str,
) -> Result<Arc<StreamGuard>, Status> {
    let (sem, key, size) = match pool {
        Pool::Get => (
            &pools.get,
            "flight.max_concurrent_streams",
            engine.config.flight.max_concurrent_streams,
        ),
        Pool::Put => (
            &pools.put,
            "flight.max_put_streams",
            engine.config.flight.max_put_streams,
        ),
    };
    let permit = match Arc::clone(sem).try_acquire_owned() {
        Ok(p) => p,
        Err(TryAcquireError::NoPermits) | Err(TryAcquireError::Closed) => {
            return Err(status(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "too many concurrent Flight {method} streams ({key} = {size}); retry shortly"
                ),
            )));
        }
    };
    let m = &engine.metrics;
    m.flight_streams_open.fetch_add(1, Ordering::Relaxed);
    m.flight_streams_total.fetch_add(1, Ordering::Relaxed);
    Ok(Arc::new(StreamGuard {
        engine: Arc::clone(engine),
        method,
        outcome: Mutex::new(None),
        _permit: permit,
    }))
}

impl StreamGuard {
    /// Records how the stream ended; the first outcome recorded wins.
    pub fn finish(&self, code: Code) {
        let mut o = self.outcome.locked();
        o.get_or_insert(code);
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let m = &self.engine.metrics;
        m.flight_streams_open.fetch_sub(1, Ordering::Relaxed);
        // A stream dropped before it ended was cancelled by the client.
        let code = self.outcome.locked().unwrap_or(Code::Cancelled);
        m.observe_flight(self.method, code_name(code));
    }
}

/// A response stream that holds its guard, records how it ended, and is ended by a
/// watchdog when the client stops accepting messages (see the module documentation).
pub struct Watched<T> {
    state: Arc<Mutex<WatchState<T>>>,
}

struct WatchState<T> {
    /// The messages; taken (and so dropped, stopping the producer) by the watchdog.
    inner: Option<BoxStream<'static, Result<T, Status>>>,
    guard: Option<Arc<StreamGuard>>,
    /// When the last message was handed to the transport, until it asks for the next.
    handed_at: Option<Instant>,
    stall: Duration,
    stalled: bool,
    done: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.locked()
}

impl<T: Send + 'static> Watched<T> {
    /// Wraps `inner`; a client that accepts no message for `stall` ends the stream.
    pub fn new(
        inner: BoxStream<'static, Result<T, Status>>,
        guard: Arc<StreamGuard>,
        stall: Duration,
    ) -> Self {
        let state = Arc::new(Mutex::new(WatchState {
            inner: Some(inner),
            guard: Some(guard),
            handed_at: None,
            stall,
            stalled: false,
            done: false,
        }));
        tokio::spawn(watchdog(Arc::downgrade(&state)));
        Watched { state }
    }
}

/// Ends the stream behind `state` once its client has stalled; returns when the
/// stream is done or dropped. It holds only a weak reference, so a stream the
/// transport dropped is freed at once, not at the watchdog's next wake-up.
async fn watchdog<T>(state: Weak<Mutex<WatchState<T>>>) {
    let mut wait = match state.upgrade() {
        Some(s) => lock(&s).stall,
        None => return,
    };
    loop {
        tokio::time::sleep(wait).await;
        let Some(state) = state.upgrade() else { return };
        let mut s = lock(&state);
        if s.done {
            return;
        }
        match s.handed_at {
            Some(t) if t.elapsed() >= s.stall => {
                s.stalled = true;
                let inner = s.inner.take();
                let guard = s.guard.take();
                let stall = s.stall;
                drop(s);
                if let Some(g) = &guard {
                    g.finish(Code::DeadlineExceeded);
                    tracing::info!(
                        method = g.method,
                        "Flight stream ended: the client accepted no message for {stall:?} (flight.stall_timeout_s)"
                    );
                }
                drop(inner);
                drop(guard);
                return;
            }
            Some(t) => wait = s.stall.saturating_sub(t.elapsed()),
            None => wait = s.stall,
        }
    }
}

impl<T> Stream for Watched<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut s = lock(&self.state);
        s.handed_at = None;
        if s.done {
            return Poll::Ready(None);
        }
        if s.stalled {
            s.done = true;
            return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                "the client accepted no message for {} s (flight.stall_timeout_s); \
                 the stream was ended to free its slot",
                s.stall.as_secs()
            )))));
        }
        let Some(inner) = s.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let item = inner.as_mut().poll_next(cx);
        match &item {
            Poll::Ready(None) => {
                s.done = true;
                if let Some(g) = s.guard.take() {
                    g.finish(Code::Ok);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(g) = &s.guard {
                    g.finish(e.code());
                }
            }
            Poll::Ready(Some(Ok(_))) => s.handed_at = Some(Instant::now()),
            Poll::Pending => {}
        }
        item
    }
}
