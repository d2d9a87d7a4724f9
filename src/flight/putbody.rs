//! How a DoPut request stream ended: only a stream the client half-closed may commit.
//!
//! tonic's request decoder reports a client's `RST_STREAM(CANCEL)` (an explicit
//! cancel, or a client whose own deadline expired) as a clean end of the stream, so the
//! handler cannot tell "the client sent everything" from "the client gave up half-way".
//! [`EndWatch`] sits under the decoder on the raw HTTP/2 body and records what really
//! happened: `END_STREAM` seen, or an error (reset, broken connection). The route
//! ([`super::wire::FlightRoutes`]) wraps every DoPut body and puts the [`BodyEnd`]
//! handle into the request's extensions, where the handler reads it before it starts
//! the write.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::Status;
use tonic::body::Body;

const OPEN: u8 = 0;
const ENDED: u8 = 1;
const BROKEN: u8 = 2;

/// A handle on how the request body ended, shared with [`EndWatch`].
#[derive(Debug, Clone, Default)]
pub struct BodyEnd(Arc<AtomicU8>);

impl BodyEnd {
    /// True only when the client ended the stream (`END_STREAM`) and no error was seen.
    pub fn ended_cleanly(&self) -> bool {
        self.0.load(Ordering::Acquire) == ENDED
    }

    fn set(&self, to: u8) {
        // An error after the end does not undo it; an end after an error does not
        // either: the first outcome wins.
        let _ = self
            .0
            .compare_exchange(OPEN, to, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// The request body with its end recorded in a [`BodyEnd`].
pub struct EndWatch {
    inner: Body,
    end: BodyEnd,
}

/// Wraps `body`, returning the wrapped body and the handle on its end.
pub fn watch(body: Body) -> (Body, BodyEnd) {
    let end = BodyEnd::default();
    let watched = EndWatch {
        inner: body,
        end: end.clone(),
    };
    (Body::new(watched), end)
}

impl HttpBody for EndWatch {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => self.end.set(ENDED),
            Poll::Ready(Some(Err(_))) => self.end.set(BROKEN),
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.end.set(ENDED);
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
