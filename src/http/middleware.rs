//! Cross-cutting layers: per-route metrics, read timeouts, request ids and tracing,
//! CORS and gzip, and the request-body rules of early rejections ([`body_rules`]).

use crate::sync::LockExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use super::error::AppError;
use crate::config::HttpConfig;
use crate::error::ErrorKind;
use crate::query::Engine;

/// Label for requests no route matched, so unknown paths cannot grow the metric set.
const UNMATCHED_ROUTE: &str = "unmatched";

/// Records every request's latency by method, route template and status.
pub async fn track(State(engine): State<Arc<Engine>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let resp = next.run(req).await;
    engine.metrics.observe_http(
        method.as_str(),
        route.as_deref().unwrap_or(UNMATCHED_ROUTE),
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    resp
}

/// Bounds reads by `http.request_timeout_s` (0 disables it). Writes are not cut off:
/// a write whose response was abandoned could still commit, and the contract promises
/// that an error response means nothing became visible.
pub async fn read_timeout(State(engine): State<Arc<Engine>>, req: Request, next: Next) -> Response {
    let secs = engine.config.http.request_timeout_s;
    if secs == 0 || !matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    match tokio::time::timeout(Duration::from_secs(secs), next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => AppError::new(
            ErrorKind::Unavailable,
            format!(
                "the request took longer than {secs} s (http.request_timeout_s); \
                 ask for a smaller range or limit"
            ),
        )
        .into_response(),
    }
}

/// Adds request ids (an incoming `x-request-id` is kept, otherwise a UUID is set and
/// returned), a tracing span per request carrying that id, CORS and gzip.
pub fn outer_layers<S>(router: Router<S>, cfg: &HttpConfig) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let mut router = router;
    if cfg.gzip {
        router = router.layer(CompressionLayer::new().gzip(true));
    }
    if let Some(cors) = cors_layer(&cfg.cors_origins) {
        router = router.layer(cors);
    }
    let request_id = HeaderName::from_static("x-request-id");
    let trace = TraceLayer::new_for_http().make_span_with(|req: &Request| {
        let id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        tracing::info_span!("http", method = %req.method(), uri = %req.uri(), request_id = %id)
    });
    router.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
            .layer(trace)
            .layer(PropagateRequestIdLayer::new(request_id)),
    )
}

/// CORS from `http.cors_origins`: empty is off, `"*"` allows any origin, otherwise
/// the listed origins (entries that are not valid header values are logged and skipped).
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let base = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers(Any)
        .expose_headers([HeaderName::from_static("x-request-id")]);
    if origins.iter().any(|o| o == "*") {
        return Some(base.allow_origin(Any));
    }
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| match HeaderValue::from_str(o) {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::warn!(origin = %o, "http.cors_origins entry is not a valid origin; skipped");
                None
            }
        })
        .collect();
    Some(base.allow_origin(list))
}

/// How long the unread remainder of a small body may take to arrive when it is drained
/// to keep the connection; a slower client gets `Connection: close` instead.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers on the request head what can be answered there, and decides what happens to
/// a body the handler did not read.
///
/// The story: a previous fix kept keep-alive connections usable after a rejection sent
/// before the body was read (401 from auth, 404 and 405 from routing) by draining up to
/// 8 MiB of the unread body. That drain is what let unauthenticated clients pin memory:
/// 250 connections streaming large bodies to a token-protected server held 2 GB until
/// each got its 401, and a declared `Content-Length` over the limit was read up to the
/// limit before the 413. Now:
///
/// - a declared `Content-Length` over `http.max_body_bytes` is a 413 at once;
/// - a body nobody read is drained only when what is left of it is at most
///   `http.max_drain_bytes` (declared, or counted for a chunked body) and arrives within
///   [`DRAIN_TIMEOUT`]; the bytes are counted and dropped, never buffered;
/// - otherwise, and when a handler stopped reading midway (a chunked body over the
///   limit), the response says `Connection: close` and the connection is closed without
///   reading further, so the client knows not to reuse it.
pub async fn body_rules(State(engine): State<Arc<Engine>>, req: Request, next: Next) -> Response {
    let cfg = &engine.config.http;
    let declared = declared_length(&req);
    if declared.is_some_and(|n| n > cfg.max_body_bytes as u64) {
        let mut resp = super::extract::too_large(cfg.max_body_bytes).into_response();
        close(&mut resp);
        return resp;
    }
    let (parts, body) = req.into_parts();
    let state = Arc::new(BodyState {
        untouched: std::sync::Mutex::new(Some(body)),
        finished: std::sync::atomic::AtomicBool::new(false),
    });
    let lazy = axum::body::Body::from_stream(LazyBody {
        state: Arc::clone(&state),
        inner: None,
    });
    let mut resp = next.run(Request::from_parts(parts, lazy)).await;
    let untouched = state.untouched.locked().take();
    let keep = match untouched {
        Some(body) if declared.is_none_or(|n| n <= cfg.max_drain_bytes as u64) => {
            drain(body, cfg.max_drain_bytes).await
        }
        Some(_) => false,
        None => state.finished.load(std::sync::atomic::Ordering::Acquire),
    };
    if !keep {
        close(&mut resp);
    }
    resp
}

/// The request's `Content-Length`, when it has a valid one (hyper refuses invalid ones).
fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(axum::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Reads and drops at most `max_bytes` of `body` within [`DRAIN_TIMEOUT`]; true when
/// the body ended within both bounds.
async fn drain(body: axum::body::Body, max_bytes: usize) -> bool {
    use http_body_util::BodyExt as _;
    if http_body::Body::is_end_stream(&body) {
        return true;
    }
    let mut body = body;
    let counted = async move {
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Some(data) = frame.data_ref() {
                seen = seen.saturating_add(data.len());
                if seen > max_bytes {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIMEOUT, counted)
        .await
        .unwrap_or(false)
}

/// Marks the response as the connection's last.
fn close(resp: &mut Response) {
    resp.headers_mut().insert(
        axum::http::header::CONNECTION,
        HeaderValue::from_static("close"),
    );
}

/// The request body as the middleware saw it: still untouched, or taken and whether
/// it was read to its end.
struct BodyState {
    untouched: std::sync::Mutex<Option<axum::body::Body>>,
    finished: std::sync::atomic::AtomicBool,
}

/// A body that takes the real one out of `state` only when first polled, so the
/// middleware can tell afterwards whether anyone read it, and how far.
struct LazyBody {
    state: Arc<BodyState>,
    inner: Option<axum::body::BodyDataStream>,
}

impl futures::Stream for LazyBody {
    type Item = Result<bytes::Bytes, axum::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.inner.is_none() {
            let body = self.state.untouched.locked().take();
            match body {
                Some(b) => self.inner = Some(b.into_data_stream()),
                None => return std::task::Poll::Ready(None),
            }
        }
        let polled = match self.inner.as_mut() {
            Some(s) => std::pin::Pin::new(s).poll_next(cx),
            None => std::task::Poll::Ready(None),
        };
        if let std::task::Poll::Ready(None) = polled {
            self.state
                .finished
                .store(true, std::sync::atomic::Ordering::Release);
        }
        polled
    }
}
