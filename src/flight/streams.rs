//! Admission and bookkeeping of DoGet/DoPut streams.
//!
//! Every stream holds one permit of a semaphore sized by
//! `flight.max_concurrent_streams`, and one [`StreamGuard`] that keeps the
//! `flight_streams_open` gauge honest: the guard is shared by the response stream and
//! the blocking producer behind it, so the gauge drops (and the permit returns) only
//! when both are gone, which is also when the last chunk mapping of the stream is
//! released. A client that disconnects drops the response stream; the producer then
//! fails its next send and exits, dropping the guard.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

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

/// Admits a new stream of `method`, or refuses it when the limit is reached.
pub fn admit(
    engine: &Arc<Engine>,
    streams: &Arc<Semaphore>,
    method: &'static str,
) -> Result<Arc<StreamGuard>, Status> {
    let permit = match Arc::clone(streams).try_acquire_owned() {
        Ok(p) => p,
        Err(TryAcquireError::NoPermits) | Err(TryAcquireError::Closed) => {
            return Err(status(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "too many concurrent Flight streams (flight.max_concurrent_streams = {}); retry shortly",
                    engine.config.flight.max_concurrent_streams
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
        let mut o = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        o.get_or_insert(code);
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let m = &self.engine.metrics;
        m.flight_streams_open.fetch_sub(1, Ordering::Relaxed);
        // A stream dropped before it ended was cancelled by the client.
        let code = self
            .outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or(Code::Cancelled);
        m.observe_flight(self.method, code_name(code));
    }
}

/// A response stream that holds its guard and records how it ended.
pub struct Guarded<T> {
    inner: BoxStream<'static, Result<T, Status>>,
    guard: Arc<StreamGuard>,
}

impl<T> Guarded<T> {
    pub fn new(inner: BoxStream<'static, Result<T, Status>>, guard: Arc<StreamGuard>) -> Self {
        Guarded { inner, guard }
    }
}

impl<T> Stream for Guarded<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = self.inner.as_mut().poll_next(cx);
        match &item {
            Poll::Ready(None) => self.guard.finish(Code::Ok),
            Poll::Ready(Some(Err(s))) => self.guard.finish(s.code()),
            _ => {}
        }
        item
    }
}
